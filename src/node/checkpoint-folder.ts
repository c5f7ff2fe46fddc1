/** Training checkpoints in a folder, for Node: the CheckpointStore the command line uses. */
import * as fs from 'node:fs/promises';
import { writeFileAtomic, writeFolderAtomic } from '../io/files.js';
import { CheckpointError, type CheckpointStore } from '../train/checkpoints.js';

/**
 * Checkpoints in a folder (Node): `<dir>/checkpoint-00000040/` holding the files, and `<dir>/latest`
 * naming the newest. Each checkpoint folder is written beside its place and renamed in; `latest` is
 * replaced by rename too, so readers see the old checkpoint or the new one, never a mix.
 */
export function folderCheckpointStore(dir: string): CheckpointStore {
  const root = dir.replace(/\/+$/, '') || '/';
  const safe = (name: string) => {
    if (!/^[\w.-]+$/.test(name) || name.startsWith('.')) throw new CheckpointError(`'${name}' is not a plain checkpoint or file name`);
    return name;
  };
  return {
    description: `folder ${root}`,
    async write(name, content) {
      await fs.mkdir(root, { recursive: true });
      await writeFolderAtomic(`${root}/${safe(name)}`, content);
    },
    async read(name, file) {
      try {
        return new Uint8Array(await fs.readFile(`${root}/${safe(name)}/${safe(file)}`));
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') return null;
        throw new CheckpointError(`folder ${root}: cannot read ${name}/${file} (${(e as Error).message})`, { cause: e });
      }
    },
    async list() {
      const entries = await fs.readdir(root, { withFileTypes: true }).catch((e) => {
        if ((e as { code?: string }).code === 'ENOENT') return [];
        throw e;
      });
      // Temporaries carry a '.tmp-' suffix and are never listed.
      return entries.filter((e) => e.isDirectory() && /^[\w-]+$/.test(e.name)).map((e) => e.name);
    },
    async remove(name) {
      await fs.rm(`${root}/${safe(name)}`, { recursive: true, force: true });
    },
    async setLatest(name) {
      const stat = await fs.stat(`${root}/${safe(name)}`).catch(() => null);
      if (!stat?.isDirectory()) throw new CheckpointError(`folder ${root}: no checkpoint '${name}' to point at`);
      await writeFileAtomic(`${root}/latest`, `${name}\n`);
    },
    async getLatest() {
      const text = await fs.readFile(`${root}/latest`, 'utf8').catch(() => null);
      const name = text?.trim() ?? '';
      return /^[\w-]+$/.test(name) ? name : null;
    },
  };
}
