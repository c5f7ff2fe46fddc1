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
});
