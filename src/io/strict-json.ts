/**
 * A strict JSON reader for headers whose format is stricter than JSON.parse: duplicate keys are errors
 * (JSON.parse keeps the last one silently), nesting depth is bounded (so a hostile 100,000-deep header
 * fails with a message instead of overflowing the stack), and numbers keep their literal text so a
 * caller can insist on integers written as integers (`256`, never `256.0` or `2.56e2`).
 * Objects become Maps, so keys such as `__proto__` are ordinary keys.
 */
export type StrictJson = null | boolean | string | JsonNumber | StrictJson[] | Map<string, StrictJson>;

/** A number with its literal text. */
export class JsonNumber {
  constructor(readonly text: string) {}
  get value(): number {
    return Number(this.text);
  }
  /** A non-negative integer written without sign, fraction or exponent, and exactly representable. */
  get isIndex(): boolean {
    return /^\d+$/.test(this.text) && Number.isSafeInteger(this.value);
  }
}

export class StrictJsonError extends Error {
  constructor(
    /** Which rule broke: 'syntax', 'duplicate-key' or 'depth'. */
    readonly rule: 'syntax' | 'duplicate-key' | 'depth',
    message: string,
    readonly position: number,
  ) {
    super(message);
    this.name = 'StrictJsonError';
  }
}

/** Shortens user-controlled text for messages: error messages stay a line, whatever the input. */
export function brief(text: string, max = 60): string {
  return text.length <= max ? text : `${text.slice(0, max - 20)}...(${text.length} chars)`;
}

/**
 * A short description of any parsed JSON value for a message: primitives as text (shortened),
 * containers by kind and size, so a deeply nested value cannot overflow the stack on its way into a message.
 */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return JSON.stringify(brief(v, 40));
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return 'an object';
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

export function parseStrictJson(text: string, maxDepth = 64): StrictJson {
  let i = 0;
  const fail = (rule: StrictJsonError['rule'], msg: string): never => {
    throw new StrictJsonError(rule, `${msg} at position ${i}`, i);
  };
  const skip = () => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++;
  };
  const expectWord = (word: string) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail('syntax', `unexpected ${describeAt(text, i)}`);
  };
  const string = (): string => {
    const start = i++; // opening quote
    let escaped = false;
    for (; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x20) fail('syntax', 'control character in a string');
      if (escaped) escaped = false;
      else if (c === 0x5c) escaped = true;
      else if (c === 0x22) break;
    }
    if (i >= text.length) fail('syntax', 'unterminated string');
    i++;
    try {
      return JSON.parse(text.slice(start, i)) as string; // decodes escapes exactly as JSON defines them
    } catch {
      return fail('syntax', 'invalid escape in a string');
    }
  };
  const number = (): JsonNumber => {
    const m = /-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
    m.lastIndex = i;
    const found = m.exec(text);
    if (!found) fail('syntax', `unexpected ${describeAt(text, i)}`);
    i += found![0].length;
    return new JsonNumber(found![0]);
  };
  const value = (depth: number): StrictJson => {
    skip();
    const c = text[i];
    if (c === '{' || c === '[') {
      if (depth >= maxDepth) fail('depth', `nesting deeper than ${maxDepth} levels`);
      i++;
      return c === '{' ? object(depth + 1) : array(depth + 1);
    }
    if (c === '"') return string();
    if (c === 't') return expectWord('true'), true;
    if (c === 'f') return expectWord('false'), false;
    if (c === 'n') return expectWord('null'), null;
    return number();
  };
  const object = (depth: number): Map<string, StrictJson> => {
    const out = new Map<string, StrictJson>();
    skip();
    if (text[i] === '}') return i++, out;
    for (;;) {
      skip();
      if (text[i] !== '"') fail('syntax', `expected a key, found ${describeAt(text, i)}`);
      const keyAt = i;
      const key = string();
      if (out.has(key)) {
        i = keyAt;
        fail('duplicate-key', `duplicate key '${brief(key)}'`);
      }
      skip();
      if (text[i] !== ':') fail('syntax', `expected ':', found ${describeAt(text, i)}`);
      i++;
      out.set(key, value(depth));
      skip();
      if (text[i] === ',') i++;
      else if (text[i] === '}') return i++, out;
      else fail('syntax', `expected ',' or '}', found ${describeAt(text, i)}`);
    }
  };
  const array = (depth: number): StrictJson[] => {
    const out: StrictJson[] = [];
    skip();
    if (text[i] === ']') return i++, out;
    for (;;) {
      out.push(value(depth));
      skip();
      if (text[i] === ',') i++;
      else if (text[i] === ']') return i++, out;
      else fail('syntax', `expected ',' or ']', found ${describeAt(text, i)}`);
    }
  };
  const result = value(0);
  skip();
  if (i < text.length) fail('syntax', `unexpected ${describeAt(text, i)} after the value`);
  return result;
}

function describeAt(text: string, i: number): string {
  return i >= text.length ? 'end of input' : `'${brief(text.slice(i, i + 12), 12)}'`;
}
