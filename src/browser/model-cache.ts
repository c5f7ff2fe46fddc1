/**
 * Model files kept in the browser's Cache Storage after their first download, so a page loads a hub
 * model once and then from disk. Each file is fetched whole (by the source's ranged reads, with
 * progress) and stored under a key made of the source's description, which names the repository and
 * revision, and the file's name. A file the source lacks is remembered as missing too (a model loads
 * offline once it has loaded), except when the source had more to say about it (an HTML fallback page).
 * Where the cache is full or missing, files load uncached.
 */
import { blobSource } from '../io/bytes.js';
import { checkFileName, type ModelSource } from '../io/sources.js';

export const DEFAULT_MODEL_CACHE = 'webgpu-finetune-models';

export interface DownloadProgress {
  file: string;
  loaded: number;
  total: number;
  /** The file came from the cache. */
  cached: boolean;
}

const key = (source: ModelSource, file: string) => `https://model-cache.invalid/${encodeURIComponent(source.description)}/${file.split('/').map(encodeURIComponent).join('/')}`;

/** Whether this runtime has Cache Storage (secure pages and their workers). */
export function hasModelCache(): boolean {
  return typeof caches !== 'undefined';
}

export function cachedSource(source: ModelSource, o: { cacheName?: string; onProgress?: (p: DownloadProgress) => void; chunkBytes?: number } = {}): ModelSource {
  const cacheName = o.cacheName ?? DEFAULT_MODEL_CACHE;
  const chunk = o.chunkBytes ?? 8 << 20;
  return {
    description: source.description,
    missingReason: (file) => source.missingReason?.(file),
    async open(file) {
      checkFileName(file, source.description);
      const cache = await caches.open(cacheName).catch(() => null);
      const hit = await cache?.match(key(source, file));
      if (hit?.status === 404) return null;
      if (hit) {
        const blob = await hit.blob();
        o.onProgress?.({ file, loaded: blob.size, total: blob.size, cached: true });
        return blobSource(file, blob);
      }
      const f = await source.open(file);
      if (!f) {
        if (!source.missingReason?.(file)) await cache?.put(key(source, file), new Response(null, { status: 404 })).catch(() => undefined);
        return null;
      }
      const parts: Uint8Array<ArrayBuffer>[] = [];
      o.onProgress?.({ file, loaded: 0, total: f.size, cached: false });
      for (let offset = 0; offset < f.size; offset += chunk) {
        const bytes = await f.read(offset, Math.min(chunk, f.size - offset));
        parts.push(bytes.slice());
        o.onProgress?.({ file, loaded: offset + bytes.byteLength, total: f.size, cached: false });
      }
      const blob = new Blob(parts);
      // A full cache costs the next visit a download, not this one its model.
      await cache?.put(key(source, file), new Response(blob, { headers: { 'content-length': String(blob.size) } })).catch(() => undefined);
      return blobSource(file, blob);
    },
  };
}

/** Remove every cached model file. */
export async function clearModelCache(cacheName = DEFAULT_MODEL_CACHE): Promise<void> {
  if (hasModelCache()) await caches.delete(cacheName);
}
