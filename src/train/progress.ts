/**
 * Progress events of the phases a user waits through, shared by the Trainer, the methods' preparations
 * and the front ends that draw them (command-line bars, the demo's phase bar).
 */
import type { LoadProgress } from '../model/checkpoint.js';
import type { SelectProgress } from '../methods/sparse/select.js';

/**
 * How far a phase a user waits through has come: a mask selection (its calibration batches, then its
 * layers), loading the weights (a tensor at a time, quantized as they arrive), an evaluation (its batches).
 */
export interface ProgressEvent {
  type: 'progress';
  task: 'select' | 'load' | 'evaluate';
  done: number;
  /** null while unknown (the calibration batches of an iterator). */
  total: number | null;
  /** What is counted, and the last one done: 'tensors (model.layers.0.mlp.up_proj.weight)'. */
  detail?: string;
}

/** Loading progress as an event. */
export function loadProgress(p: LoadProgress): ProgressEvent {
  return { type: 'progress', task: 'load', done: p.loaded, total: p.total, detail: `tensors (${p.tensor})` };
}

/** A mask selection's progress as an event. */
export function selectionProgress(p: SelectProgress): ProgressEvent {
  return { type: 'progress', task: 'select', done: p.done, total: p.total, detail: p.layer ? `layers scored (last ${p.layer})` : 'calibration batches' };
}
