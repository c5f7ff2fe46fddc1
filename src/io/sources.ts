/**
 * Where model files come from: a Hugging Face-style hub (files at {endpoint}/{id}/resolve/{revision}/{file},
 * read with HTTP range requests), a local folder (Node), or browser File objects (a picked folder).
 * Every source opens files for random access, so safetensors stream tensor by tensor.
 */
import { WebGPUFinetuneError } from '../errors.js';
import { blobSource, bytesSource, type ByteSource } from './bytes.js';
import { httpRequest, NetworkError, type HttpOptions } from './http.js';
import { brief } from './strict-json.js';

export class ModelSourceError extends WebGPUFinetuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('model-source', message, options);
  }
}

/** A text file of a source that cannot be read as what it must be: too large, not UTF-8, not JSON. */
export class MalformedFileError extends ModelSourceError {
  constructor(
    where: string,
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${where}: ${file} ${problem}`);
  }
}

/**
 * A file name taken from a config or an index (a shard, a tokenizer file) that would leave the model's
 * source: an absolute path, a '..' or '.' segment, a backslash, a drive or URL scheme, or control characters.
 */
export class UnsafeFileNameError extends WebGPUFinetuneError {
  constructor(
    readonly fileName: string,
    where: string,
  ) {
    super('unsafe-file-name', `${where}: refusing file name '${brief(fileName)}': model files must be relative paths inside the model's source`);
  }
}

/**
 * Checks that a file name stays inside its source: relative, '/'-separated, no empty, '.' or '..'
 * segments, no backslashes, colons or control characters. Every source applies it in open(), so no
 * caller can reach outside a folder, URL prefix or File set. (Symbolic links inside a folder are
 * followed: the Hugging Face cache links snapshot files to its blob store.)
 */
export function checkFileName(file: string, where: string): void {
  const ok =
    typeof file === 'string' &&
    file.length > 0 &&
    file.length <= 1024 &&
    !/[\\:\u0000-\u001f\u007f]/.test(file) &&
    file.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
  if (!ok) throw new UnsafeFileNameError(String(file), where);
}

export interface ModelSource {
  /** Shown in messages, e.g. 'hub Qwen/Qwen2-0.5B@main' or a folder path. */
  readonly description: string;
  /** A file for random access, or null when the source has no such file. */
  open(file: string): Promise<ByteSource | null>;
  /** Why open(file) took a file as missing, when there was more to it than a 404 (an HTML fallback page). */
  missingReason?(file: string): string | undefined;
}

/** "<source> has no <file>", with the source's reason for taking it as missing when it has one. */
export function missingFileMessage(source: ModelSource, file: string, detail = ''): string {
  const reason = source.missingReason?.(file);
  return `${source.description} has no ${brief(file)}${detail}${reason ? `: ${reason}` : ''}`;
}

/** JSON files larger than this are refused before reading them (configs and indexes are kilobytes). */
export const MAX_JSON_BYTES = 16 << 20;

/** A text file of the source, refused unread when larger than maxBytes; null when the source lacks it. */
export async function readText(source: ModelSource, file: string, maxBytes = MAX_JSON_BYTES): Promise<string | null> {
  const f = await source.open(file);
  if (!f) return null;
  if (f.size > maxBytes) throw new MalformedFileError(source.description, file, `is ${f.size} bytes, over the ${maxBytes}-byte limit for this file`);
  const bytes = await f.read(0, f.size);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new MalformedFileError(source.description, file, 'is not valid UTF-8');
  }
}

export async function readJson<T = unknown>(source: ModelSource, file: string, maxBytes = MAX_JSON_BYTES): Promise<T | null> {
  const text = await readText(source, file, maxBytes);
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new MalformedFileError(source.description, file, `is not valid JSON (${brief(e instanceof Error ? e.message : String(e), 120)})`);
  }
}

export interface HubOptions extends HttpOptions {
  revision?: string;
  /** Hub root; default https://huggingface.co. Mirrors and test servers use the same layout. */
  endpoint?: string;
}

export const DEFAULT_HUB = 'https://huggingface.co';

export function hubSource(id: string, options: HubOptions = {}): ModelSource {
  if (!/^[\w.-]+(\/[\w.-]+)?$/.test(id) || id.split('/').some((part) => part === '.' || part === '..')) {
    throw new ModelSourceError(`'${brief(id)}' is not a hub model id (expected 'org/name')`);
  }
  const revision = options.revision ?? 'main';
  const endpoint = (options.endpoint ?? DEFAULT_HUB).replace(/\/+$/, '');
  return httpSource(`hub ${id}@${revision} (${endpoint})`, (file) => `${endpoint}/${id}/resolve/${encodeURIComponent(revision)}/${encodePath(file)}`, options, id);
}

/** A model folder served over HTTP as plain files, {base}/{file} (a static host, a dev server's public folder, a CDN). */
export function urlSource(base: string, options: Omit<HubOptions, 'revision' | 'endpoint'> = {}): ModelSource {
  const root = base.replace(/\/+$/, '');
  return httpSource(`url ${root}`, (file) => `${root}/${encodePath(file)}`, options, root);
}

function encodePath(file: string): string {
  return file.split('/').map(encodeURIComponent).join('/');
}

/**
 * Files over HTTP: the size from HEAD (or, when HEAD reports none, from a one-byte range request), bytes
 * by range requests, with a whole-body fallback when a server ignores ranges. Requests go through
 * httpRequest: deadlines, retries and typed network errors.
 */
function httpSource(description: string, url: (file: string) => string, options: Omit<HubOptions, 'revision' | 'endpoint'>, namePrefix: string): ModelSource {
  // Files a server answered with an HTML page: a single-page app's dev server or host (Vite, Netlify,
  // a router's catch-all) answers every unknown path with its index.html and status 200.
  const htmlAnswers = new Map<string, string>();
  const htmlFallback = (file: string, r: Response): boolean => {
    const type = (r.headers.get('content-type') ?? '').toLowerCase();
    if (!type.startsWith('text/html') || /\.html?$/i.test(file)) return false;
    htmlAnswers.set(file, r.url || url(file));
    return true;
  };
  const failure = (file: string, r: Response) => {
    const hint = r.status === 401 || r.status === 403 ? ' (gated or private: pass an access token in headers)' : '';
    return new ModelSourceError(`${description}: ${file}: HTTP ${r.status} ${brief(r.statusText, 60)}${hint}`);
  };
  const contentLength = (r: Response): number | null => {
    const text = r.headers.get('x-linked-size') ?? r.headers.get('content-length');
    return text !== null && /^\d+$/.test(text.trim()) ? Number(text) : null;
  };

  return {
    description,
    missingReason(file) {
      const at = htmlAnswers.get(file);
      return at && `the server answered ${at} with an HTML page, not the file (a single-page app's fallback answers every path it does not have so); check that the URL points at the model's folder`;
    },
    async open(file) {
      checkFileName(file, description);
      const at = url(file);
      // The hub answers HEAD for large files with a redirect whose x-linked-size is the real size.
      const head = await httpRequest(at, { method: 'HEAD' }, options, async (r) => {
        if (r.status === 404) return null;
        if (!r.ok) throw failure(file, r);
        if (htmlFallback(file, r)) return null;
        return { size: contentLength(r) };
      });
      if (!head) return null;
      let whole: Uint8Array | null = null; // when the server ignores ranges, the first read keeps the body
      let size = head.size;
      if (size === null) {
        // No size in the HEAD response (chunked encoding): ask for one byte and read the total from
        // Content-Range, or take the whole body when the server ignores ranges.
        size = await httpRequest(at, { headers: { Range: 'bytes=0-0' } }, options, async (r, body) => {
          if (r.status === 404) return null;
          if (!r.ok) throw failure(file, r);
          if (htmlFallback(file, r)) return null;
          const total = /\/(\d+)\s*$/.exec(r.headers.get('content-range') ?? '');
          if (r.status === 206 && total) return Number(total[1]);
          if (r.status === 206) throw new ModelSourceError(`${description}: ${file}: the server reported no size for it`);
          whole = await body();
          return whole.byteLength;
        });
      }
      if (size === null) return null;
      const total = size;
      const name = `${namePrefix}/${file}`;
      return {
        name,
        size: total,
        async read(offset, length) {
          if (offset + length > total) throw new RangeError(`${name}: read past the end`);
          if (length === 0) return new Uint8Array(0);
          if (whole) return whole.subarray(offset, offset + length);
          return httpRequest(at, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } }, options, async (r, body) => {
            if (r.status === 206) {
              const bytes = await body();
              if (bytes.byteLength !== length) throw new NetworkError(at, 'reset', `range response held ${bytes.byteLength} bytes, expected ${length}`);
              return bytes;
            }
            if (!r.ok) throw failure(file, r);
            const all = await body();
            if (all.byteLength !== total) throw new ModelSourceError(`${description}: ${file}: got ${all.byteLength} bytes, expected ${total} (the file changed?)`);
            whole = all;
            return all.subarray(offset, offset + length);
          });
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
      checkFileName(file, description);
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
      checkFileName(file, description);
      if (!Object.hasOwn(files, file)) return null;
      const v = files[file];
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
      checkFileName(file, `folder ${path}`);
      const fs = await fsp;
      let handle: import('node:fs/promises').FileHandle;
      try {
        handle = await fs.open(join(file), 'r');
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') return null;
        throw new ModelSourceError(`folder ${path}: cannot open ${file} (${e instanceof Error ? e.message : e})`, { cause: e });
      }
      const stat = await handle.stat();
      await handle.close();
      if (!stat.isFile()) throw new ModelSourceError(`folder ${path}: ${file} is not a regular file`);
      const size = stat.size;
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
 * A source from a URL: a model's page on the hub (`{endpoint}/org/name`, optionally `/tree/{revision}`) is
 * that hub repository; any other URL is a folder of plain files at that address.
 */
function sourceFromUrl(url: string, hub: HubOptions): ModelSource {
  const { revision, endpoint: hubEndpoint, ...http } = hub;
  const endpoint = (hubEndpoint ?? DEFAULT_HUB).replace(/\/+$/, '');
  if (url.toLowerCase().startsWith(`${endpoint.toLowerCase()}/`)) {
    const m = /^([\w.-]+\/[\w.-]+)(?:\/(?:tree|resolve)\/([^/]+))?\/?$/.exec(url.slice(endpoint.length + 1));
    if (!m) throw new ModelSourceError(`'${brief(url)}' is on the hub ${endpoint} but is not a model's address ('${endpoint}/org/name', optionally followed by /tree/<revision>)`);
    return hubSource(m[1], { ...hub, endpoint, revision: m[2] ? decodeURIComponent(m[2]) : revision });
  }
  return urlSource(url, http);
}

/**
 * A source from what users pass: a ModelSource as is; File objects; a URL (a hub model's page, or else a
 * folder of plain files at that URL); an existing local path (Node); otherwise a hub id ('org/name').
 */
export async function resolveSource(source: SourceLike, hub: HubOptions = {}): Promise<ModelSource> {
  if (typeof source !== 'string') {
    if (typeof source !== 'object' || source === null) {
      throw new ModelSourceError(`expected a model source (a hub id, URL, folder path, ModelSource or File objects), got ${source === null ? 'null' : typeof source}`);
    }
    if (typeof (source as ModelSource).open === 'function') return source as ModelSource;
    const files = Array.from(source as ArrayLike<File>);
    if (files.length === 0 || !files.every((f) => typeof Blob !== 'undefined' && f instanceof Blob && typeof f.name === 'string')) {
      throw new ModelSourceError('expected a model source (a hub id, URL, folder path, ModelSource or File objects), got an object that is none of these');
    }
    return fileListSource(files);
  }
  if (/^https?:\/\//i.test(source)) return sourceFromUrl(source, hub);
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (proc?.versions?.node && (source.startsWith('.') || source.startsWith('/'))) return folderSource(source);
  if (!proc?.versions?.node) return hubSource(source, hub);
  const specifier = 'node:fs';
  const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs');
  if (fs.existsSync(source)) return folderSource(source);
  // Say why a name that may have been meant as a folder went to the hub, in every message about it.
  const because = `no folder '${brief(source)}' exists here, so it was tried as a hub id`;
  let hubbed: ModelSource;
  try {
    hubbed = hubSource(source, hub);
  } catch (e) {
    throw new ModelSourceError(`${because}: ${(e as Error).message}`);
  }
  return { description: `${hubbed.description} [${because}]`, open: (file) => hubbed.open(file), missingReason: (file) => hubbed.missingReason?.(file) };
}
