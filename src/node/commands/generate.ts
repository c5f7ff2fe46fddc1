/** `webgpu-finetune generate`: continue a prompt with a model, a PEFT adapter on it, or a training run. */
import { Generator } from '../../serve/generate.js';
import { HELP_FLAG, numberFlag, type Command, type FlagValues } from '../flags.js';
import { MODEL_FLAGS, openModel } from '../setup.js';
import { TUNED_FLAGS, tunedModel } from '../tuned.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'continue a prompt (default model: the shipped tiny base)',
  examples: [
    ['--prompt "next:abc="', 'the shipped tiny base, greedy'],
    ['--run runs/qwen --prompt "Hello" --chat --temperature 0.7', 'a run\'s model through its chat template, sampled'],
  ],
  flags: {
    ...MODEL_FLAGS,
    ...TUNED_FLAGS,
    prompt: { type: 'string', value: 'TEXT', default: 'rev:webgpu=', help: 'the text to continue' },
    chat: { type: 'boolean', help: 'send the prompt as a user message through the model\'s chat template' },
    'max-new-tokens': { type: 'string', value: 'N', default: '16', help: 'tokens to generate at most' },
    temperature: { type: 'string', value: 'T', default: '0', help: 'sampling temperature (0: greedy)' },
    'top-k': { type: 'string', value: 'K', default: '0', help: 'sample among the K most likely (0: all)' },
    'top-p': { type: 'string', value: 'P', default: '1', help: 'nucleus sampling mass' },
    seed: { type: 'string', value: 'S', default: '0', help: 'sampling seed' },
    help: HELP_FLAG,
  },
  run: generate,
};

async function generate(values: FlagValues): Promise<void> {
  const options = {
    maxNewTokens: numberFlag(values, 'max-new-tokens', { integer: true, min: 1, max: 1 << 20 }),
    temperature: numberFlag(values, 'temperature', { min: 0, max: 100 }),
    topK: numberFlag(values, 'top-k', { integer: true, min: 0 }),
    topP: numberFlag(values, 'top-p', { min: 0, max: 1 }),
    seed: numberFlag(values, 'seed', { integer: true, min: 0, max: 2 ** 32 - 1 }),
  };
  const m = await openModel(values, () => undefined);
  try {
    const tuned = await tunedModel(values, m);
    const gen = new Generator(tuned.model);
    try {
      const prompt = String(values.prompt);
      let text = prompt;
      if (values.chat) {
        const template = m.tokenizer.chatTemplate;
        if (!template) throw new Error('--chat: this model\'s tokenizer_config.json has no chat_template');
        text = template.render([{ role: 'user', content: prompt }], { addGenerationPrompt: true });
      }
      const ids = m.tokenizer.encode(text, !values.chat);
      if (ids.length + options.maxNewTokens > m.ckpt.config.maxPositions) {
        throw new Error(`the prompt (${ids.length} tokens) and --max-new-tokens ${options.maxNewTokens} exceed the model's ${m.ckpt.config.maxPositions} positions`);
      }
      const out = await gen.generate(ids, { ...options, onToken: () => undefined });
      console.log(`${prompt}${m.tokenizer.decode(out.tokens, { skipSpecialTokens: true })}`);
      console.log(`(${out.tokens.length} tokens, stopped by ${out.stoppedBy}; ${tuned.description})`);
    } finally {
      gen.destroy();
      tuned.destroy();
    }
  } finally {
    m.gpu.destroy();
  }
}
