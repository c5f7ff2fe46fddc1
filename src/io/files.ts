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
    if (stale) await fs.rm(full, { force: true });
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
