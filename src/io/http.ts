/**
 * HTTP requests that neither hang nor mislead. Every request has a deadline for its response headers
 * and an idle deadline between body chunks (fetch's own limits are 300 s, or none in browsers); the
 * caller's AbortSignal cancels at any point; idempotent requests are retried with exponential backoff on
 * network failures, timeouts, 408, 429, 500, 502, 503 and 504; and failures become a typed NetworkError that names the
 * URL and the cause (DNS failure, refused, reset, timeout) instead of fetch's bare "fetch failed" or
 * "terminated".
 */
import { WebGPUFinetuneError } from '../errors.js';
import { brief } from './strict-json.js';

export interface HttpOptions {
  /** Milliseconds to wait for a response's headers (connecting included). Default 30,000. */
  timeoutMs?: number;
  /** Milliseconds a response body may stall between chunks before the read is abandoned. Default 30,000. */
  idleTimeoutMs?: number;
  /** Extra attempts after a failure that may pass (network error, timeout, 408, 429, 5xx). Default 3. */
  retries?: number;
  /** Delay before the first retry, doubled for each next one (with jitter). Default 250 ms. */
  retryDelayMs?: number;
  /** Cancels every request of the source; it then fails with a NetworkError of kind 'aborted'. */
  signal?: AbortSignal;
  /** Extra request headers, e.g. { Authorization: 'Bearer hf_...' } for gated models. */
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

export type NetworkFailure = 'dns' | 'refused' | 'reset' | 'timeout' | 'aborted' | 'http' | 'other';

/** A request that failed in transit or with a server error, after any retries. */
export class NetworkError extends WebGPUFinetuneError {
  constructor(
    readonly url: string,
    readonly kind: NetworkFailure,
    detail: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super('network', `${url}: ${detail}`, options);
  }
}

const DESCRIBE: Record<NetworkFailure, string> = {
  dns: 'the host name did not resolve (DNS failure)',
  refused: 'the connection was refused',
  reset: 'the connection was reset or closed mid-transfer',
  timeout: 'timed out',
  aborted: 'aborted by the caller',
  http: 'server error',
  other: 'the request failed',
};

/** An error and its causes, outermost first (fetch wraps the socket's error in one or two layers). */
function causeChain(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let c: unknown = e; c && out.length < 5; c = (c as { cause?: unknown }).cause) out.push(c);
  return out;
}

const codeOf = (c: unknown): string => String((c as { code?: unknown }).code ?? '');

/**
 * Whether trying again may help: not after the caller aborted, a name that does not resolve (a
 * temporary resolver failure excepted), a TLS certificate problem or a malformed URL.
 */
function retryable(e: NetworkError): boolean {
  if (e.kind === 'aborted') return false;
  const found = causeChain(e.cause).map(codeOf);
  if (e.kind === 'dns') return found.includes('EAI_AGAIN');
  return !found.some((c) => /^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_INVALID_URL)/.test(c));
}

/** The kind of a fetch failure, from the error codes Node's fetch (undici) puts in its cause chain. */
export function classifyFailure(e: unknown): NetworkFailure {
  for (const c of causeChain(e)) {
    const code = codeOf(c);
    const message = c instanceof Error ? c.message : '';
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME') return 'dns';
    if (code === 'ECONNREFUSED') return 'refused';
    if (code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
    if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || /terminated|other side closed|socket hang up/i.test(message)) return 'reset';
  }
  return 'other';
}

function causeText(e: unknown): string {
  const parts: string[] = [];
  for (const c of causeChain(e)) if (c instanceof Error && c.message && !parts.includes(c.message)) parts.push(c.message);
  return parts.join(': ').slice(0, 200);
}

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/**
 * One idempotent request, retried as a whole (headers and body) until `consume` returns: `consume` reads
 * the response through `body()`, which enforces the idle deadline. An HTTP status that retrying cannot
 * fix is returned to `consume` as is.
 */
export async function httpRequest<T>(
  url: string,
  init: RequestInit,
  options: HttpOptions,
  consume: (response: Response, body: () => Promise<Uint8Array>) => Promise<T>,
): Promise<T> {
  const retries = Math.max(0, options.retries ?? 3);
  const baseDelay = options.retryDelayMs ?? 250;
  for (let attempt = 0; ; attempt++) {
    try {
      return await attemptOnce(url, init, options, consume);
    } catch (e) {
      if (!(e instanceof NetworkError) || !retryable(e) || attempt >= retries) throw e;
      const delay = baseDelay * 2 ** attempt * (0.75 + Math.random() / 2);
      await sleep(delay, options.signal, url);
    }
  }
}

async function attemptOnce<T>(
  url: string,
  init: RequestInit,
  options: HttpOptions,
  consume: (response: Response, body: () => Promise<Uint8Array>) => Promise<T>,
): Promise<T> {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const controller = new AbortController();
  let timedOut: string | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = (ms: number, what: string) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = what;
      controller.abort();
    }, ms);
  };
  const onAbort = () => controller.abort();
  options.signal?.addEventListener('abort', onAbort);
  // Settles when this attempt is aborted (deadline or caller), so that even a fetch or a body that
  // ignores its signal (a custom fetch) cannot keep the attempt waiting.
  const abandoned = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));
  abandoned.catch(() => undefined);
  const fail = (e: unknown): NetworkError => {
    if (e instanceof NetworkError) return e;
    if (options.signal?.aborted) return new NetworkError(url, 'aborted', DESCRIBE.aborted, undefined, { cause: e });
    if (timedOut) return new NetworkError(url, 'timeout', `timed out: ${timedOut}`, undefined, { cause: e });
    const kind = classifyFailure(e);
    const text = causeText(e);
    return new NetworkError(url, kind, `${DESCRIBE[kind]}${text ? ` (${text})` : ''}`, undefined, { cause: e });
  };
  let response: Response | undefined;
  try {
    if (options.signal?.aborted) throw fail(new Error('aborted before the request'));
    const headersMs = options.timeoutMs ?? 30_000;
    arm(headersMs, `no response within ${headersMs} ms`);
    try {
      const headers = { ...options.headers, ...(init.headers as Record<string, string>) };
      response = await Promise.race([doFetch(url, { ...init, headers, signal: controller.signal }), abandoned]);
    } catch (e) {
      throw fail(e);
    }
    const r = response;
    if (RETRY_STATUS.has(r.status)) throw new NetworkError(url, 'http', `HTTP ${r.status} ${brief(r.statusText, 60)}`.trim(), r.status);
    const idleMs = options.idleTimeoutMs ?? 30_000;
    const body = async (): Promise<Uint8Array> => {
      arm(idleMs, `the body stalled for ${idleMs} ms`);
      try {
        if (!r.body) return new Uint8Array(0);
        const reader = r.body.getReader();
        const chunks: Uint8Array[] = [];
        let total = 0;
        for (;;) {
          const { done, value } = await Promise.race([reader.read(), abandoned]);
          if (done) break;
          chunks.push(value);
          total += value.byteLength;
          arm(idleMs, `the body stalled for ${idleMs} ms after ${total} bytes`);
        }
        if (chunks.length === 1) return chunks[0];
        const out = new Uint8Array(total);
        let at = 0;
        for (const c of chunks) {
          out.set(c, at);
          at += c.byteLength;
        }
        return out;
      } catch (e) {
        const error = fail(e);
        // Headers arrived and the body broke off: the connection was dropped, whatever the runtime calls
        // it (browsers say only "network error").
        if (error.kind === 'other') throw new NetworkError(url, 'reset', `${DESCRIBE.reset} (${causeText(e)})`, undefined, { cause: e });
        throw error;
      }
    };
    return await consume(r, body);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    // A body left unread (an error status, a consumer that threw) is cancelled to free its connection.
    if (response?.body && !response.bodyUsed && !response.body.locked) await response.body.cancel().catch(() => undefined);
    if (response?.body?.locked) controller.abort();
  }
}

function sleep(ms: number, signal: AbortSignal | undefined, url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new NetworkError(url, 'aborted', DESCRIBE.aborted));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new NetworkError(url, 'aborted', DESCRIBE.aborted));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
