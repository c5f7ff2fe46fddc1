/**
 * Packs the GPU kit into .carry/gpu-kit/ (ignored by git): everything bench/gpu/run.sh needs on an
 * x86-64 Linux machine that has a GPU driver but no Node, no npm and no network.
 *
 *   app/kit.mjs + chunks   bench/gpu/kit.ts bundled with the kit's test files, vitest's `expect` and a
 *                          small vitest shim (bench/gpu/test-runner.ts) standing in for the vitest runner
 *   node.xz                this Node binary, compressed
 *   node_modules/webgpu    the `webgpu` package's loader, with dawn.node.xz to unpack beside it
 *   debs/                  Debian's Vulkan loader (libvulkan1), for machines whose image lacks one
 *
 * Usage: npm run gpu:pack [-- --out DIR] [-- --app-only]   (about 29 MB; `--app-only` bundles app/ alone,
 * to run with this machine's Node and node_modules, as the kit's own test does)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type Plugin } from 'esbuild';
import { kitTestFiles } from './kit-tests.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({ options: { out: { type: 'string', default: join(root, '.carry/gpu-kit') }, 'app-only': { type: 'boolean' } }, strict: true });
const kit = resolve(values.out!);
mkdirSync(kit, { recursive: true });
if (!values['app-only'] && process.platform !== 'linux' || process.arch !== 'x64') throw new Error(`the kit carries this Node binary, so pack it on x86-64 Linux (this is ${process.platform}-${process.arch})`);

/** `kit:tests`: the kit's test files as [name, lazy import] pairs, imported one at a time when run. */
const testList: Plugin = {
  name: 'kit-tests',
  setup(b) {
    b.onResolve({ filter: /^kit:tests$/ }, () => ({ path: 'kit:tests', namespace: 'kit' }));
    b.onLoad({ filter: /.*/, namespace: 'kit' }, () => {
      const files = kitTestFiles(join(root, 'test'));
      const entries = files.map((f) => `[${JSON.stringify(f)}, () => import(${JSON.stringify(join(root, 'test', f))})]`);
      return { contents: `export default [\n${entries.join(',\n')}\n];\n`, resolveDir: root, loader: 'js' };
    });
  },
};

rmSync(join(kit, 'app'), { recursive: true, force: true });
await build({
  entryPoints: { kit: join(root, 'bench/gpu/kit.ts') },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir: join(kit, 'app'),
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  alias: { vitest: join(root, 'bench/gpu/test-runner.ts') },
  // Loaded only where the kit does not go (the tokenizer cross-check, browsers); dawn.node comes through `webgpu`.
  external: ['webgpu', '@huggingface/transformers', 'playwright', 'playwright-core'],
  banner: { js: "import { createRequire as __kitRequire } from 'node:module'; const require = __kitRequire(import.meta.url);" },
  plugins: [testList],
  logLevel: 'warning',
});

if (values['app-only']) {
  console.log(`bundled ${join(kit, 'app')}`);
  process.exit(0);
}

// The webgpu package: its loader and dawn.node (compressed; run.sh unpacks it in place).
const webgpu = join(root, 'node_modules/webgpu');
const kitWebgpu = join(kit, 'node_modules/webgpu');
mkdirSync(join(kitWebgpu, 'dist/linux-x64'), { recursive: true });
for (const f of ['index.js', 'package.json', 'LICENSE.md']) copyFileSync(join(webgpu, f), join(kitWebgpu, f));
compress(join(webgpu, 'dist/linux-x64/dawn.node'), join(kitWebgpu, 'dist/linux-x64/dawn.node.xz'));
compress(process.execPath, join(kit, 'node.xz'));
writeFileSync(join(kit, 'node-version.txt'), `${process.version}\n`);

// Debian's Vulkan loader, for images without one (the GPU driver brings its own ICD, not the loader).
const debs = join(kit, 'debs');
mkdirSync(debs, { recursive: true });
if (!readdirSync(debs).some((f) => f.startsWith('libvulkan1'))) {
  try {
    execFileSync('apt-get', ['download', 'libvulkan1'], { cwd: debs, stdio: 'pipe' });
  } catch (e) {
    console.warn(`could not download libvulkan1 (${(e as Error).message.split('\n')[0]}); the kit will need a Vulkan loader on the GPU machine`);
  }
}

const size = (p: string): number => (statSync(p).isDirectory() ? readdirSync(p).reduce((s, f) => s + size(join(p, f)), 0) : statSync(p).size);
console.log(`packed ${kit}: ${(size(kit) / 2 ** 20).toFixed(1)} MiB (the device tool carries at most 64 MiB with the working tree)`);

/** xz-compress `from` into `to`, unless `to` is newer than `from`. */
function compress(from: string, to: string): void {
  if (existsSync(to) && statSync(to).mtimeMs > statSync(from).mtimeMs) return;
  execFileSync('sh', ['-c', `xz -T0 -6 -c "$0" > "$1.part" && mv "$1.part" "$1"`, from, to], { stdio: 'inherit' });
}
