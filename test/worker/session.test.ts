/**
 * A fine-tuning session in a Web Worker is the in-thread session's twin: the same spec gives bitwise the
 * same losses and generations, events arrive as typed objects, pause/cancel reach the worker, exported
 * files come back whole, errors keep their name and code, and a run checkpointed to IndexedDB in one
 * worker resumes in another with the losses of an uninterrupted run. Browsers only.
 */
import { describe, expect, it } from 'vitest';
import { FineTuneSession, type SessionEvent, type SessionSpec } from '../../src/train/session.js';
import { SessionWorker, WorkerFineTuneSession } from '../../src/worker/client.js';
import { readHeader } from '../../src/io/safetensors.js';
import { bytesSource } from '../../src/io/bytes.js';

const inBrowser = typeof window !== 'undefined' && typeof Worker !== 'undefined';

const rows = Array.from({ length: 48 }, (_, i) => {
  const word = 'abcdefghijklmnopqrstuvwxyz'.slice(i % 20, (i % 20) + 1 + (i % 5));
  return JSON.stringify({ prompt: `next:${word}=`, completion: String.fromCharCode(word.charCodeAt(word.length - 1) + 1) });
});
const jsonl = () => new TextEncoder().encode(rows.join('\n'));

function spec(o: Partial<SessionSpec> = {}): SessionSpec {
  return {
    model: `${location.origin}/models/tiny-llama`,
    data: { name: 'next.jsonl', bytes: jsonl() },
    dataset: { seqLength: 32, validation: 0.25 },
    train: { method: 'lora', lora: { rank: 4 }, steps: 4, batchSize: 4, microBatch: 2, optimizer: { lr: 1e-2 } },
    ...o,
  };
}

describe.skipIf(!inBrowser)('a session in a Web Worker', () => {
  it('trains, generates and exports exactly as the session in the page thread does', async () => {
    const here = await FineTuneSession.open(spec());
    const hereBase = await here.generate('next:abc=', { model: 'base', maxNewTokens: 4 });
    const want = await here.train();
    const hereTuned = await here.generate('next:abc=', { maxNewTokens: 4 });
    const hereAdapter = await here.exportAdapter();
    here.destroy();

    const events: SessionEvent[] = [];
    const there = await WorkerFineTuneSession.open(spec({ data: new File([jsonl()], 'next.jsonl') }), { onEvent: (e) => events.push(e) });
    try {
      expect(there.info).toEqual(here.info);
      expect(there.info).toMatchObject({ totalSteps: 4, batchSize: 4, method: { name: 'lora' }, model: { architecture: 'LlamaForCausalLM' } });
      expect(events.some((e) => e.type === 'status')).toBe(true);
      const streamed: string[] = [];
      expect(await there.generate('next:abc=', { model: 'base', maxNewTokens: 4 }, (t) => streamed.push(t))).toBe(hereBase);
      expect(streamed.length).toBeGreaterThan(0);
      expect(streamed.at(-1)).toBe(hereBase);
      const got = await there.train();
      expect(got.losses).toEqual(want.losses);
      expect(got.evals).toEqual(want.evals);
      expect(await there.generate('next:abc=', { maxNewTokens: 4 })).toBe(hereTuned);
      const steps = events.filter((e) => e.type === 'step');
      expect(steps.map((e) => e.step)).toEqual([1, 2, 3, 4]);
      expect(steps[0]).toMatchObject({ type: 'step', totalSteps: 4 });
      expect(typeof steps[0].loss).toBe('number');
      expect([...events].reverse().find((e) => e.type === 'done')).toMatchObject({ reason: 'completed', step: 4 });
      const adapter = await there.exportAdapter();
      expect(Object.keys(adapter).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
      expect(adapter['adapter_model.safetensors']).toEqual(hereAdapter['adapter_model.safetensors']);
      const header = await readHeader(bytesSource('adapter_model.safetensors', adapter['adapter_model.safetensors']));
      expect(header.tensors.length).toBeGreaterThan(0);
      const merged = await there.exportMerged();
      expect(Object.keys(merged)).toContain('config.json');
      expect(await there.ping()).toBeGreaterThanOrEqual(0);
    } finally {
      there.destroy();
    }
  });

  it('pauses and cancels in the worker, and a run checkpointed to IndexedDB resumes in a new worker', async () => {
    const run = `worker-${Math.random().toString(36).slice(2)}`;
    const whole = await FineTuneSession.open(spec({ train: { ...spec().train, steps: 6 } }));
    const want = await whole.train();
    whole.destroy();

    const first = await WorkerFineTuneSession.open(spec({ train: { ...spec().train, steps: 6 }, checkpoints: { indexedDb: run } }));
    let pausedAt = -1;
    first.onEvent = (e) => {
      if (e.type === 'step' && e.step === 1) first.pause();
      if (e.type === 'paused') {
        pausedAt = e.step;
        first.resume();
      }
      if (e.type === 'step' && e.step === 3) first.cancel();
    };
    const head = await first.train();
    first.destroy();
    expect(pausedAt).toBeGreaterThanOrEqual(1);
    expect(head.reason).toBe('cancelled');
    // Opening the run again as a new one is refused: its checkpoints are not deleted unasked.
    await expect(WorkerFineTuneSession.open(spec({ train: { ...spec().train, steps: 6 }, checkpoints: { indexedDb: run } }))).rejects.toThrow(/holds a run \(latest checkpoint-\d+\): continue it with resume, or start over with overwrite/);

    const second = await WorkerFineTuneSession.open(spec({ train: { ...spec().train, steps: 6 }, checkpoints: { indexedDb: run }, resume: true }));
    try {
      expect(second.info.resumesFrom).toBe(`checkpoint-${String(head.step).padStart(8, '0')}`);
      const tail = await second.train();
      expect([...head.losses, ...tail.losses]).toEqual(want.losses);
    } finally {
      second.destroy();
    }
  });

  it('a SessionWorker previews datasets and runs one session after another', async () => {
    const worker = new SessionWorker();
    try {
      const preview = await worker.previewDataset(new File([jsonl(), '\n{"prompt": 3}\n'], 'next.jsonl'));
      expect(preview).toMatchObject({ name: 'next.jsonl', records: 49, format: 'prompt-completion', fileFormat: 'jsonl' });
      for (const rank of [2, 4]) {
        const session = await worker.open(spec({ train: { ...spec().train, lora: { rank }, steps: 1 } }));
        expect(session.info.method.trainableParameters).toBeGreaterThan(0);
        expect((await session.train()).losses).toHaveLength(1);
        session.destroy();
      }
      expect((await worker.previewDataset(new File([jsonl()], 'again.jsonl'))).records).toBe(48);
    } finally {
      worker.terminate();
    }
  });

  it('errors cross with their name and code', async () => {
    const bad = new TextEncoder().encode('{"prompt": "a", "completion": "b"}\n{not json\n');
    const e = await WorkerFineTuneSession.open(spec({ data: { name: 'bad.jsonl', bytes: bad }, dataset: { seqLength: 32, onBadRow: 'fail' } })).then(
      () => null,
      (err: unknown) => err as Error & { code?: string },
    );
    expect(e?.name).toBe('DatasetRowsError');
    expect(e?.code).toBeTypeOf('string');
    expect(e?.message).toMatch(/bad\.jsonl:2/);
    const unknown = await WorkerFineTuneSession.open(spec({ train: { ...spec().train, method: 'nope' as never } })).then(() => null, (err: Error) => err);
    expect(unknown?.message).toMatch(/unknown method 'nope'/);
  });
});
