/**
 * The training step of methods that bring none of their own: forward and backward through the model,
 * gradients accumulated over the micro-batches of an optimizer step, then the optimizer's update.
 */
import type { CommandRecorder } from '../gpu/recorder.js';
import type { CausalLM } from '../model/causal-lm.js';
import type { PreparedBatch } from '../model/batch.js';
import type { RecordedStep, StepContext, TrainingStep } from '../methods/method.js';

export const backpropStep: TrainingStep = {
  record(rec: CommandRecorder, { method, model, batch, optimizer, pass, first, update }: StepContext): RecordedStep {
    if (first) {
      model.zeroGrads(rec);
      method.zeroGrads(rec);
    }
    // Each micro-batch adds the gradient of its summed token losses; the optimizer divides by the step's
    // target tokens (update.gradScale), so every target token of the step weighs the same however the
    // step is split (the rule of transformers' Trainer since its 2024 gradient-accumulation fix).
    const acts = model.record(rec, batch, 1, pass);
    try {
      if (update) optimizer.record(rec, update.lr, update.gradScale);
    } catch (e) {
      acts.unpin();
      throw e;
    }
    return {
      finish: () => {
        try {
          // The copy for the readback is queued now, ahead of any later step that reuses these activations.
          return model.gpu.readF32(acts.losses).then((l) => l.reduce((a, b) => a + b, 0));
        } finally {
          acts.unpin();
        }
      },
    };
  },
  probe(rec: CommandRecorder, model: CausalLM, batch: PreparedBatch): () => void {
    const acts = model.record(rec, batch, 0, { training: true, pass: 0 });
    return () => acts.unpin();
  },
};
