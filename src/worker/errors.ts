/**
 * Errors across the worker boundary. Comlink rebuilds a thrown Error from its message, name and stack;
 * this handler carries the library's error code too, so the page can tell a full disk from a bad
 * dataset row without parsing messages.
 */
import * as Comlink from 'comlink';
import { WebGPUFinetuneError } from '../errors.js';

/** An error thrown in the worker: its name and code are the original's (the class cannot cross). */
export class WorkerError extends WebGPUFinetuneError {
  constructor(name: string, code: string, message: string, readonly workerStack?: string) {
    super(code, message);
    this.name = name;
  }
}

interface SerializedError {
  name: string;
  code: string;
  message: string;
  stack?: string;
}

const throwHandler = Comlink.transferHandlers.get('throw') as Comlink.TransferHandler<{ value: unknown }, unknown>;

/** Install the handler (both sides must): idempotent. */
export function installErrorHandler(): void {
  if ((throwHandler as { webgpuFinetune?: boolean }).webgpuFinetune) return;
  const handler: Comlink.TransferHandler<{ value: unknown }, SerializedError | { plain: unknown }> & { webgpuFinetune: true } = {
    webgpuFinetune: true,
    canHandle: throwHandler.canHandle,
    serialize({ value }) {
      if (value instanceof Error) {
        const code = (value as { code?: unknown }).code;
        return [{ name: value.name, code: typeof code === 'string' ? code : 'worker', message: value.message, stack: value.stack }, []];
      }
      return [{ plain: value }, []];
    },
    deserialize(s) {
      if ('plain' in s) throw s.plain;
      throw new WorkerError(s.name, s.code, s.message, s.stack);
    },
  };
  Comlink.transferHandlers.set('throw', handler as unknown as Comlink.TransferHandler<unknown, unknown>);
}
