import { mkdtempSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
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
    const { hostname } = await import('node:os');
    const host = hostname().replace(/[^A-Za-z0-9.]/g, '_').slice(0, 64);
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!; // a process that has exited
    const stale = `state.safetensors.tmp-${host}-${deadPid}-123`;
    const live = `state.safetensors.tmp-${host}-${process.ppid}-456`; // a writer that is still running
    const foreign = `state.safetensors.tmp-otherhost-${deadPid}-1`; // another machine's: its pid means nothing here
    const oldForeign = `state.safetensors.tmp-otherhost-${deadPid}-2`; // ... until it is a day old
    const other = `other.safetensors.tmp-${host}-${deadPid}-789`; // another target's: left to its own saves
    for (const f of [stale, live, foreign, oldForeign, other]) writeFileSync(join(dir, f), 'partial');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    utimesSync(join(dir, oldForeign), twoDaysAgo, twoDaysAgo);
    await writeFileAtomic(path, 'new');
    expect(readdirSync(dir).sort()).toEqual([other, 'state.safetensors', live, foreign].sort());
  });

  it('concurrent saves of one file do not remove each other\'s temporaries', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgft-atomic-'));
    const path = join(dir, 'state.safetensors');
    const payloads = Array.from({ length: 8 }, (_, i) => new Uint8Array(1 << 16).fill(i));
    await Promise.all(payloads.map((p) => writeFileAtomic(path, p)));
    const final = readFileSync(path);
    expect(payloads.some((p) => Buffer.compare(Buffer.from(p), final) === 0)).toBe(true);
    expect(readdirSync(dir)).toEqual(['state.safetensors']);
  });
});
