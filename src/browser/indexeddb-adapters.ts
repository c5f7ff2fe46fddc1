/**
 * Adapters in IndexedDB (idb-keyval), the adapter cache's tier behind host memory in browsers: one
 * record per adapter, its Maps and typed arrays stored as structured clones.
 */
import { createStore, del, get, set, type UseStore } from 'idb-keyval';
import type { Adapter } from '../serve/adapters.js';
import type { AdapterStore } from '../serve/adapter-store.js';

export function indexedDbAdapterStore(o: { database?: string } = {}): AdapterStore {
  let store: UseStore | null = null;
  const db = () => (store ??= createStore(o.database ?? 'webgpu-finetune-adapters', 'adapters'));
  return {
    get: (id) => get<Adapter>(id, db()),
    set: (id, adapter) => set(id, adapter, db()),
    delete: (id) => del(id, db()),
  };
}
