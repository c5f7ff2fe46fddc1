import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { folderSource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { SHIPPED_MODELS } from '../../src/model/shipped.js';
import { tinyModelFiles } from '../../src/model/tiny.js';

describe('shipped tiny models', () => {
  it.each(Object.keys(SHIPPED_MODELS))('%s matches its generator byte for byte and loads', async (name) => {
    const files = tinyModelFiles(SHIPPED_MODELS[name]);
    for (const [file, content] of Object.entries(files)) {
      const onDisk = readFileSync(new URL(`../../public/models/${name}/${file}`, import.meta.url));
      const want = typeof content === 'string' ? Buffer.from(content) : Buffer.from(content);
      expect(onDisk.equals(want), `${file} differs: run npm run make:models`).toBe(true);
    }
    const ckpt = await openCheckpoint(folderSource(new URL(`../../public/models/${name}`, import.meta.url).pathname));
    expect(ckpt.config.numLayers).toBe(2);
  });
});
