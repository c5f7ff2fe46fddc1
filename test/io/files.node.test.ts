import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../src/io/files.js';

describe('atomic file writes', () => {
  it('replaces the target whole and leaves no temporary files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgft-atomic-'));
    const path = join(dir, 'state.safetensors');
    writeFileSync(path, 'old checkpoint');
    await writeFileAtomic(path, new Uint8Array([1, 2, 3]));
    expect(Array.from(readFileSync(path))).toEqual([1, 2, 3]);
    expect(readdirSync(dir)).toEqual(['state.safetensors']);
  });

  it('keeps the previous file and leaves nothing behind when the write fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgft-atomic-'));
    const good = join(dir, 'state.safetensors');
    writeFileSync(good, 'last good');
    await expect(writeFileAtomic(good, 42 as never)).rejects.toThrow(); // data that cannot be written
    await expect(writeFileAtomic(dir, 'x')).rejects.toThrow(); // a target that cannot be replaced
    expect(readFileSync(good, 'utf8')).toBe('last good');
    expect(readdirSync(dir)).toEqual(['state.safetensors']);
    expect(readdirSync(join(dir, '..')).filter((f) => f.startsWith(dir.split('/').pop()! + '.tmp'))).toEqual([]);
  });

  it('removes temporaries that interrupted writes left behind, and only those', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgft-atomic-'));
    const path = join(dir, 'state.safetensors');
    const { spawnSync } = await import('node:child_process');
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!; // a process that has exited
    const stale = `state.safetensors.tmp-${deadPid}-123`;
    const live = `state.safetensors.tmp-${process.ppid}-456`; // a writer that is still running
    const other = `other.safetensors.tmp-${deadPid}-789`; // another target's: left to its own saves
    for (const f of [stale, live, other]) writeFileSync(join(dir, f), 'partial');
    await writeFileAtomic(path, 'new');
    expect(readdirSync(dir).sort()).toEqual([other, 'state.safetensors', live].sort());
  });
});
