/**
 * Chat templates: the Jinja `chat_template` of a model's tokenizer_config.json, rendered by
 * @huggingface/jinja with the variables transformers.js's `apply_chat_template` passes (messages,
 * add_generation_prompt, tools, documents and the special tokens named in the config), so a
 * conversation renders here exactly as it does there. Templates are data: nothing here knows a model.
 *
 * For training on assistant turns only, a conversation is split into spans: each assistant turn is
 * what rendering the conversation up to and including it adds to rendering the turns before it with
 * the generation prompt, which is the text the model produces after the prompt at inference.
 */
import { Template } from '@huggingface/jinja';
import { brief } from '../io/strict-json.js';

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** A piece of a rendered conversation: assistant output (trained on by default) or not. */
export interface ChatSpan {
  text: string;
  assistant: boolean;
}

/** A conversation the template cannot render, or cannot split into turns. */
export class ChatTemplateError extends Error {}

/** The special tokens transformers.js passes to a template, as the config names them. */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v || null;
  if (v && typeof v === 'object' && (v as { __type?: unknown }).__type === 'AddedToken') return String((v as { content?: unknown }).content ?? '') || null;
  return null;
}

export class ChatTemplate {
  private readonly template: Template;
  private readonly variables: Record<string, unknown>;

  constructor(
    readonly source: string,
    specialTokens: Partial<Record<(typeof SPECIAL_TOKEN_KEYS)[number], string>> = {},
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`the chat template does not parse (${brief((e as Error).message, 120)})`);
    }
    this.variables = Object.fromEntries(Object.entries(specialTokens).filter(([, v]) => v));
  }

  /**
   * The template of a tokenizer_config.json, or null when it has none. A list of named templates
   * resolves as transformers.js resolves it: `name`, else the one named 'default'.
   */
  static fromTokenizerConfig(config: Record<string, unknown>, name?: string): ChatTemplate | null {
    let source = config.chat_template;
    if (source === undefined || source === null) return null;
    if (Array.isArray(source)) {
      const named = new Map<string, string>();
      for (const t of source) {
        if (typeof t?.name !== 'string' || typeof t?.template !== 'string') throw new ChatTemplateError('chat_template is a list whose entries are not { name, template } strings');
        named.set(t.name, t.template);
      }
      const pick = name ?? 'default';
      if (!named.has(pick)) throw new ChatTemplateError(`no chat template named '${brief(pick)}' (the tokenizer has ${[...named.keys()].join(', ')})`);
      source = named.get(pick);
    }
    if (typeof source !== 'string') throw new ChatTemplateError('chat_template is neither a string nor a list of named templates');
    const tokens: Record<string, string> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const v = tokenText(config[key]);
      if (v) tokens[key] = v;
    }
    return new ChatTemplate(source, tokens);
  }

  /** The conversation as text, as transformers.js's apply_chat_template(messages, { tokenize: false }) renders it. */
  render(messages: ChatMessage[], o: { addGenerationPrompt?: boolean; tools?: unknown[] | null; documents?: unknown[] | null } = {}): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: o.addGenerationPrompt ?? false,
        tools: o.tools ?? null,
        documents: o.documents ?? null,
        ...this.variables,
      });
    } catch (e) {
      throw new ChatTemplateError(`the chat template failed on this conversation (${brief((e as Error).message, 120)})`);
    }
  }

  /**
   * The rendered conversation in spans, each assistant turn its own span. A turn ends where rendering
   * stops after it; when the conversation goes on with the end-of-sequence token right after that
   * point, the token is the turn's (templates that close only the last turn with it, or that close a
   * turn only when another follows, as Qwen1.5's and Gemma's do), so the model learns to stop.
   */
  spans(messages: ChatMessage[]): ChatSpan[] {
    const whole = this.render(messages);
    const eos = typeof this.variables.eos_token === 'string' ? this.variables.eos_token : '';
    const spans: ChatSpan[] = [];
    let done = 0; // characters of `whole` already in spans
    for (let i = 0; i < messages.length; i++) {
      if (messages[i].role !== 'assistant') continue;
      const prompt = this.render(messages.slice(0, i), { addGenerationPrompt: true });
      const rendered = this.render(messages.slice(0, i + 1));
      let end = -1;
      if (whole.startsWith(rendered)) end = rendered.length;
      else if (eos && rendered.endsWith(eos) && whole.startsWith(rendered.slice(0, -eos.length))) end = rendered.length - eos.length;
      if (end < 0 && rendered.startsWith(prompt) && whole.startsWith(prompt)) end = this.turnEnd(whole, prompt.length, rendered, messages[i].content);
      if (end >= 0 && eos && whole.startsWith(eos, end)) end += eos.length;
      if (end < prompt.length || !rendered.startsWith(prompt) || prompt.length < done) {
        throw new ChatTemplateError(`the chat template does not render turn ${i + 1} as a continuation of the turns before it, so assistant turns cannot be told apart; train on the whole conversation instead`);
      }
      if (prompt.length > done) spans.push({ text: whole.slice(done, prompt.length), assistant: false });
      if (end > prompt.length) spans.push({ text: whole.slice(prompt.length, end), assistant: true });
      done = end;
    }
    if (whole.length > done) spans.push({ text: whole.slice(done), assistant: false });
    return spans;
  }

  /**
   * Where an assistant turn ends in the whole conversation when the template renders it differently as
   * the last turn (Qwen3 writes an empty <think></think> block into the last reply only): its reply
   * right after the prompt, then the text the template closes a turn with; -1 when it is not there.
   */
  private turnEnd(whole: string, start: number, rendered: string, content: unknown): number {
    const own = typeof content === 'string' && content ? rendered.lastIndexOf(content) : -1;
    if (own < 0 || !whole.startsWith(content as string, start)) return -1;
    const end = start + (content as string).length;
    const closing = rendered.slice(own + (content as string).length);
    return whole.startsWith(closing, end) ? end + closing.length : end;
  }
}
