/**
 * Writing files in Node so that a crash never leaves a half-written file in place: write a temporary
 * file beside the target, flush it, then rename over the target (atomic on POSIX file systems).
 * Temporary names carry the writer's host and process id (`<target>.tmp-<host>-<pid>-<random>`), so a
 * later save can tell the leftovers of an interrupted write (their process is gone) from a write still in
 * progress, also when several machines or containers share the folder: another host's temporaries are
 * removed only once they are a day old.
 */
const pending = new Set<string>();
const STALE_FOREIGN_MS = 24 * 3600 * 1000;

async function hostTag(): Promise<string> {
  const specifier = 'node:os';
  const os = (await import(/* @vite-ignore */ specifier)) as typeof import('node:os');
  return os.hostname().replace(/[^A-Za-z0-9.]/g, '_').slice(0, 64) || 'host';
}

export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const specifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs/promises');
  const host = await hostTag();
  await removeStaleTemporaries(fs, path, host);
  const tmp = `${path}.tmp-${host}-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
  pending.add(tmp);
  try {
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  } finally {
    pending.delete(tmp);
  }
}

/**
 * Write a folder of files so that it appears whole or not at all: the files go into a temporary folder
 * beside `path`, each flushed, then the folder is renamed into place. A folder already at `path` is
 * moved aside first and removed after the swap (a crash in between leaves it as a temporary, which the
 * next write removes).
 */
export async function writeFolderAtomic(path: string, files: Record<string, Uint8Array | string>): Promise<void> {
  const specifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs/promises');
  const host = await hostTag();
  await removeStaleTemporaries(fs, path, host);
  const tmp = `${path}.tmp-${host}-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
  const old = `${path}.tmp-${host}-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
  pending.add(tmp);
  try {
    await fs.mkdir(tmp);
    for (const [name, data] of Object.entries(files)) {
      if (name.includes('/') || name.startsWith('.')) throw new Error(`writeFolderAtomic: '${name}' is not a plain file name`);
      const handle = await fs.open(`${tmp}/${name}`, 'w');
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    const moved = await fs.rename(path, old).then(() => true, (e) => {
      if ((e as { code?: string }).code === 'ENOENT') return false;
      throw e;
    });
    await fs.rename(tmp, path);
    if (moved) await fs.rm(old, { recursive: true, force: true });
    await syncFolder(fs, path.slice(0, Math.max(path.lastIndexOf('/'), 0)) || '.');
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    pending.delete(tmp);
  }
}

/** Flush a folder's entries (the renames in it), where the platform allows opening a folder. */
async function syncFolder(fs: typeof import('node:fs/promises'), dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r').catch(() => null);
  if (!handle) return;
  try {
    await handle.sync().catch(() => undefined);
  } finally {
    await handle.close();
  }
}

/** Temporaries of `path` left by writes that can no longer finish: their process is gone, or is this one and no longer writing. */
async function removeStaleTemporaries(fs: typeof import('node:fs/promises'), path: string, host: string): Promise<void> {
  const slash = path.lastIndexOf('/');
  const dir = slash >= 0 ? path.slice(0, slash) || '/' : '.';
  const base = path.slice(slash + 1);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return; // the write itself reports a missing folder
  }
  for (const name of names) {
    const m = /^\.tmp-([A-Za-z0-9._]+)-(\d+)-\d+$/.exec(name.startsWith(base) ? name.slice(base.length) : '');
    if (!m) continue;
    const full = `${path}${name.slice(base.length)}`; // as its writer named it (see `pending`)
    const pid = Number(m[2]);
    let stale: boolean;
    if (m[1] !== host) {
      const stat = await fs.stat(full).catch(() => null);
      stale = stat !== null && Date.now() - stat.mtimeMs > STALE_FOREIGN_MS;
    } else if (pid === process.pid) stale = !pending.has(full);
    else stale = !processAlive(pid);
    if (stale) await fs.rm(full, { force: true, recursive: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM'; // alive, but another user's
  }
}
