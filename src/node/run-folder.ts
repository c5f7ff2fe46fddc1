/**
 * A train command's output folder, checked before anything loads: a new folder starts a run; one that
 * holds a run (its run.json, its checkpoints) continues it when the command's options are the run's,
 * and is otherwise refused, naming --resume and --overwrite. Nothing there is deleted unless the
 * command says --overwrite, and then only once the new run has saved its first checkpoint.
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { allMethodFields } from '../methods/registry.js';
import { latestCheckpoint } from '../train/checkpoints.js';
import { folderCheckpointStore } from './checkpoint-folder.js';
import { UsageError, type FlagValues } from './flags.js';

export const RUN_FILE = 'run.json';

/**
 * Flags a rerun may differ in: those that change how a run reports or keeps things, not what it trains,
 * and --output itself (the folder is the run, whether named or the default).
 */
const NOT_COMPARED = new Set(['output', 'resume', 'overwrite', 'log-json', 'samples', 'save-every', 'keep', 'merge', 'eval-every', 'help']);

/**
 * The flags as a run keeps and compares them: a flag that names a local file or folder (the model, the
 * data, a mask) as an absolute path, so `--model ./m`, `--model m` and the default that is that folder
 * are one run, whatever the working directory.
 */
export function runFlags(values: FlagValues): FlagValues {
  const paths = new Set(['model', 'data', 'validation', ...allMethodFields().filter((f) => f.field.kind === 'file').map((f) => f.field.name)]);
  return Object.fromEntries(Object.entries(values).map(([n, v]) => [n, paths.has(n) && typeof v === 'string' && existsSync(v) ? resolve(v) : v]));
}

export interface RunFolderPlan {
  /** Continue the folder's latest checkpoint. */
  resume: boolean;
  /** Start over in a folder that holds a run. */
  overwrite: boolean;
}

/** What the command does with `output`; a usage error when that would lose or mix up work. */
export async function planRunFolder(output: string, values: FlagValues, log: (line: string) => void): Promise<RunFolderPlan> {
  if (values.resume && values.overwrite) throw new UsageError('--resume continues the checkpoints that --overwrite deletes: give one of them');
  const info = await stat(output).catch(() => null);
  if (info && !info.isDirectory()) throw new UsageError(`--output '${output}' is a file: give a folder (it is made if absent)`);
  const latest = info ? await latestCheckpoint(folderCheckpointStore(join(output, 'checkpoints'))) : null;
  if (values.resume) {
    if (!latest) throw new UsageError(`--resume: '${output}' holds no checkpoint to continue`);
    return { resume: true, overwrite: false };
  }
  const saved = info ? await savedFlags(output) : null;
  if (!latest && !saved) return { resume: false, overwrite: false };
  const where = latest ? ` (latest ${latest})` : '';
  if (values.overwrite) {
    log(`output:  starting over in ${output}, which holds a run${where}: its files go once this run saves its first checkpoint`);
    return { resume: false, overwrite: true };
  }
  const changed = saved ? differingFlags(saved, runFlags(values)) : ['(no run.json)'];
  if (changed.length === 0) {
    if (latest) log(`output:  ${output} holds this run with the same options: continuing from ${latest} (--overwrite starts over)`);
    return { resume: latest !== null, overwrite: false };
  }
  throw new UsageError(
    `--output '${output}' holds another run${where} with ${changed.join(', ')}: continue it with --resume, start over with --overwrite, or choose another --output`,
  );
}

/** The flags of the run.json a train command wrote, or null when there is none. */
async function savedFlags(output: string): Promise<FlagValues | null> {
  const text = await readFile(join(output, RUN_FILE), 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    const flags = (JSON.parse(text) as { flags?: FlagValues }).flags;
    return flags && typeof flags === 'object' ? flags : {};
  } catch {
    return {};
  }
}

/** `--name now (was then)` for each training flag whose value differs. */
function differingFlags(saved: FlagValues, now: FlagValues): string[] {
  const names = [...new Set([...Object.keys(saved), ...Object.keys(now)])].filter((n) => !NOT_COMPARED.has(n)).sort();
  const shown = (v: unknown) => (v === undefined ? 'unset' : String(v));
  return names.filter((n) => shown(saved[n]) !== shown(now[n])).map((n) => `--${n} ${shown(now[n])} (was ${shown(saved[n])})`);
}
