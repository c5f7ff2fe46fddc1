/**
 * Typed errors. Each says what went wrong and, where the user can act, what to do.
 * `code` is stable for programmatic handling; `name` is the class name.
 */
export class WebGPUFinetuneError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** No WebGPU adapter could be obtained in this runtime. */
export class WebGPUUnavailableError extends WebGPUFinetuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('webgpu-unavailable', message, options);
  }
}

/** The GPU device was lost (driver reset, destroyed, out of resources). Every later call fails with it. */
export class DeviceLostError extends WebGPUFinetuneError {
  readonly reason: string;
  constructor(reason: string, detail: string) {
    super('device-lost', `GPU device lost (${reason})${detail ? `: ${detail}` : ''}. Create a new device to continue.`);
    this.reason = reason;
  }
}

/** A WebGPU validation error surfaced from the device (a bug in this library or bad arguments that slipped past checks). */
export class GPUValidationFailedError extends WebGPUFinetuneError {
  constructor(message: string) {
    super('gpu-validation', `WebGPU validation error: ${message}`);
  }
}

/** The device could not allocate memory. */
export class GPUOutOfMemoryError extends WebGPUFinetuneError {
  constructor(message: string) {
    super('gpu-out-of-memory', `GPU out of memory: ${message}. Use a smaller batch or sequence length, or free other GPU work.`);
  }
}

/** A buffer or binding exceeds what this device supports. */
export class BufferTooLargeError extends WebGPUFinetuneError {
  readonly requestedBytes: number;
  readonly limitBytes: number;
  constructor(what: string, requestedBytes: number, limitBytes: number, limitName: string, advice = 'Split the tensor, or use a smaller shape.') {
    super('buffer-too-large', `${what} needs ${requestedBytes} bytes but this device's ${limitName} is ${limitBytes} bytes. ${advice}`);
    this.requestedBytes = requestedBytes;
    this.limitBytes = limitBytes;
  }
}

/** Shapes or buffer sizes passed to a kernel do not agree. */
export class ShapeError extends WebGPUFinetuneError {
  constructor(message: string) {
    super('shape', message);
  }
}

/** A file made for one model (a sparse mask, a delta, an adapter) was given to another. */
export class ModelMismatchError extends WebGPUFinetuneError {
  constructor(message: string) {
    super('model-mismatch', message);
  }
}

/**
 * The adapter cache refused: an unknown id ('adapter-unknown'), an id already taken ('adapter-exists'),
 * an adapter in use by a batch ('adapter-in-use'), no room left ('adapter-cache-full'), a batch it
 * cannot serve at once ('adapter-batch'), an adapter only in the store until loaded ('adapter-not-loaded'),
 * or a failed store write ('adapter-store').
 */
export class AdapterCacheError extends WebGPUFinetuneError {
  constructor(code: 'adapter-unknown' | 'adapter-exists' | 'adapter-in-use' | 'adapter-cache-full' | 'adapter-batch' | 'adapter-not-loaded' | 'adapter-store', message: string) {
    super(code, message);
  }
}

/**
 * An adapter file sets an option whose math this engine does not implement (DoRA, a PiSSA adapter as
 * PEFT saves it, extra trainable modules, ...): `field` names the option and `value` its value.
 */
export class UnsupportedAdapterError extends WebGPUFinetuneError {
  constructor(
    readonly field: string,
    readonly value: string,
    message: string,
  ) {
    super('unsupported-adapter', message);
  }
}

/**
 * Something asked for needs a WebGPU feature the device does not have (mixed precision without
 * `shader-f16`, subgroup reductions without `subgroups`): `feature` names it, `wantedBy` what asked.
 */
export class FeatureUnavailableError extends WebGPUFinetuneError {
  constructor(
    readonly feature: string,
    readonly wantedBy: string,
  ) {
    super('feature-unavailable', `${wantedBy} needs the WebGPU feature '${feature}', which this device does not have`);
  }
}

/**
 * An options object (or a JSON file of the engine's own) holds a key it does not know: a misspelt or
 * unsupported option, which would otherwise do nothing. `key` is the key, `suggestion` the nearest known one.
 */
export class UnknownOptionError extends WebGPUFinetuneError {
  constructor(
    readonly where: string,
    readonly key: string,
    readonly suggestion: string | null,
    known: readonly string[],
  ) {
    super('unknown-option', `${where}: unknown option '${key.slice(0, 60)}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}; known: ${known.join(', ')}`);
  }
}
