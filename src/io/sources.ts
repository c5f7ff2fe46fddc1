/**
 * Where model files come from: a Hugging Face-style hub (files at {endpoint}/{id}/resolve/{revision}/{file},
 * read with HTTP range requests), a local folder (Node), or browser File objects (a picked folder).
 * Every source opens files for random access, so safetensors stream tensor by tensor.
 */
import { WebGPUFinetuneError } from '../errors.js';
import { blobSource, bytesSource, type ByteSource } from './bytes.js';

export class ModelSourceError extends WebGPUFinetuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('model-source', message, options);
  }
}

export interface ModelSource {
  /** Shown in messages, e.g. 'hub Qwen/Qwen2-0.5B@main' or a folder path. */
  readonly description: string;
  /** A file for random access, or null when the source has no such file. */
  open(file: string): Promise<ByteSource | null>;
}

export async function readText(source: ModelSource, file: string): Promise<string | null> {
  const f = await source.open(file);
  if (!f) return null;
  return new TextDecoder().decode(await f.read(0, f.size));
}

export async function readJson<T = unknown>(source: ModelSource, file: string): Promise<T | null> {
  const text = await readText(source, file);
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ModelSourceError(`${source.description}: ${file} is not valid JSON (${e instanceof Error ? e.message : e})`);
  }
}

export interface HubOptions {
  revision?: string;
  /** Hub root; default https://huggingface.co. Mirrors and test servers use the same layout. */
  endpoint?: string;
  /** Extra request headers, e.g. { Authorization: 'Bearer hf_...' } for gated models. */
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

export const DEFAULT_HUB = 'https://huggingface.co';

export function hubSource(id: string, options: HubOptions = {}): ModelSource {
  if (!/^[\w.-]+(\/[\w.-]+)?$/.test(id)) throw new ModelSourceError(`'${id}' is not a hub model id (expected 'org/name')`);
  const revision = options.revision ?? 'main';
  const endpoint = (options.endpoint ?? DEFAULT_HUB).replace(/\/+$/, '');
  return httpSource(`hub ${id}@${revision} (${endpoint})`, (file) => `${endpoint}/${id}/resolve/${encodeURIComponent(revision)}/${encodePath(file)}`, options, id);
}

/** A model folder served over HTTP as plain files, {base}/{file} (a static host, a dev server's public folder). */
export function urlSource(base: string, options: Omit<HubOptions, 'revision' | 'endpoint'> = {}): ModelSource {
  const root = base.replace(/\/+$/, '');
  return httpSource(`url ${root}`, (file) => `${root}/${encodePath(file)}`, options, root);
}

function encodePath(file: string): string {
  return file.split('/').map(encodeURIComponent).join('/');
}

/** Files over HTTP: size from HEAD, bytes by range requests (whole-body fallback when ranges are ignored). */
function httpSource(description: string, url: (file: string) => string, options: Omit<HubOptions, 'revision' | 'endpoint'>, namePrefix: string): ModelSource {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const request = async (file: string, init: RequestInit): Promise<Response> => {
    try {
      return await doFetch(url(file), { ...init, headers: { ...options.headers, ...(init.headers as Record<string, string>) } });
    } catch (cause) {
      throw new ModelSourceError(`${description}: could not fetch ${file} (${cause instanceof Error ? cause.message : cause})`, { cause });
    }
  };
  const failure = (file: string, r: Response) => {
    const hint = r.status === 401 || r.status === 403 ? ' (gated or private: pass an access token in headers)' : '';
    return new ModelSourceError(`${description}: ${file}: HTTP ${r.status} ${r.statusText}${hint}`);
  };

  return {
    description,
    async open(file) {
      const head = await request(file, { method: 'HEAD' });
      if (head.status === 404) return null;
      if (!head.ok) throw failure(file, head);
      // The hub answers HEAD for large files with a redirect whose x-linked-size is the real size.
      const size = Number(head.headers.get('x-linked-size') ?? head.headers.get('content-length'));
      if (!Number.isSafeInteger(size)) throw new ModelSourceError(`${description}: ${file}: the server did not report its size`);
      let whole: Uint8Array | null = null; // when the server ignores ranges, the first read keeps the body
      const name = `${namePrefix}/${file}`;
      return {
        name,
        size,
        async read(offset, length) {
          if (offset + length > size) throw new RangeError(`${name}: read past the end`);
          if (length === 0) return new Uint8Array(0);
          if (whole) return whole.subarray(offset, offset + length);
          const r = await request(file, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
          if (r.status === 206) {
            const bytes = new Uint8Array(await r.arrayBuffer());
            if (bytes.byteLength !== length) throw new ModelSourceError(`${description}: ${file}: short range response`);
            return bytes;
          }
          if (!r.ok) throw failure(file, r);
          whole = new Uint8Array(await r.arrayBuffer());
          if (whole.byteLength !== size) throw new ModelSourceError(`${description}: ${file}: got ${whole.byteLength} bytes, expected ${size}`);
          return whole.subarray(offset, offset + length);
        },
      };
    },
  };
}

/** Browser File objects, e.g. from <input type="file" webkitdirectory>; matched by name. */
export function fileListSource(files: Iterable<File> | ArrayLike<File>, description = 'selected files'): ModelSource {
  const byName = new Map<string, File>();
  for (const f of Array.from(files as ArrayLike<File>)) {
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath;
    // A picked folder gives 'folder/sub/file'; keys are relative to the folder, plus the bare name.
    if (rel) byName.set(rel.split('/').slice(1).join('/'), f);
    byName.set(f.name, f);
  }
  return {
    description,
    async open(file) {
      const f = byName.get(file);
      return f ? blobSource(file, f) : null;
    },
  };
}

/** In-memory files (tests, generated models). */
export function memorySource(files: Record<string, Uint8Array | string>, description = 'memory'): ModelSource {
  return {
    description,
    async open(file) {
      const v = files[file];
      if (v === undefined) return null;
      return bytesSource(file, typeof v === 'string' ? new TextEncoder().encode(v) : v);
    },
  };
}

/** A local folder (Node only): files are opened and read by range, never loaded whole. */
export function folderSource(path: string): ModelSource {
  const specifier = 'node:fs/promises';
  const fsp = import(/* @vite-ignore */ specifier) as Promise<typeof import('node:fs/promises')>;
  const join = (file: string) => `${path.replace(/\/+$/, '')}/${file}`;
  return {
    description: `folder ${path}`,
    async open(file) {
      const fs = await fsp;
      let handle: import('node:fs/promises').FileHandle;
      try {
        handle = await fs.open(join(file), 'r');
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') return null;
        throw new ModelSourceError(`folder ${path}: cannot open ${file} (${e instanceof Error ? e.message : e})`, { cause: e });
      }
      const { size } = await handle.stat();
      await handle.close();
      return {
        name: join(file),
        size,
        async read(offset, length) {
          if (offset + length > size) throw new RangeError(`${join(file)}: read past the end`);
          const h = await fs.open(join(file), 'r');
          try {
            const out = new Uint8Array(length);
            let done = 0;
            while (done < length) {
              const { bytesRead } = await h.read(out, done, length - done, offset + done);
              if (bytesRead === 0) throw new ModelSourceError(`${join(file)}: file shrank while reading`);
              done += bytesRead;
            }
            return out;
          } finally {
            await h.close();
          }
        },
      };
    },
  };
}

export type SourceLike = string | ModelSource | Iterable<File> | ArrayLike<File>;

/**
 * A source from what users pass: a ModelSource as is; File objects; 'http(s)://host/org/name' (a hub
 * endpoint with the id in the path); an existing local path (Node); otherwise a hub id.
 */
export async function resolveSource(source: SourceLike, hub: HubOptions = {}): Promise<ModelSource> {
  if (typeof source !== 'string') {
    if ('open' in (source as object)) return source as ModelSource;
    return fileListSource(source as Iterable<File>);
  }
  const m = /^(https?:\/\/[^/]+(?:\/.*?)?)\/([\w.-]+\/[\w.-]+)\/?$/.exec(source);
  if (m) return hubSource(m[2], { ...hub, endpoint: m[1] });
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (proc?.versions?.node && (source.startsWith('.') || source.startsWith('/'))) return folderSource(source);
  if (proc?.versions?.node) {
    const specifier = 'node:fs';
    const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs');
    if (fs.existsSync(source)) return folderSource(source);
  }
  return hubSource(source, hub);
}
