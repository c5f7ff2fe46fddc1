/**
 * The tier behind the adapter cache's host memory: where an adapter's arrays go when the host budget is
 * full, and come back from on `load`. In browsers, IndexedDB (src/browser/indexeddb-adapters.ts); a Map
 * anywhere.
 */
import type { Adapter } from './adapters.js';

export interface AdapterStore {
  get(id: string): Promise<Adapter | undefined>;
  set(id: string, adapter: Adapter): Promise<void>;
  delete(id: string): Promise<void>;
}

/** A store in this process's memory (tests, and Node apps that page adapters out elsewhere). */
export function memoryAdapterStore(): AdapterStore & { readonly ids: string[] } {
  const map = new Map<string, Adapter>();
  return {
    get ids() {
      return [...map.keys()];
    },
    get: async (id) => map.get(id),
    set: async (id, adapter) => void map.set(id, adapter),
    delete: async (id) => void map.delete(id),
  };
}
