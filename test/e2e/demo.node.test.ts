/**
 * The demo page end to end, built (vite build) and served as static files, in headless Chromium driven
 * by Playwright: the shipped model and sample dataset, each method trained some steps with the loss
 * falling on the chart (its data, not its pixels), base vs fine-tuned generations, the adapter
 * downloaded and its files checked, a run stopped, the page reloaded and the run resumed with the
 * losses of an uninterrupted run, training in the worker (no GPU device or queue on the page thread), and the message a
 * browser without WebGPU gets. Screenshots go to test-results/demo/.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright';
import { build, preview, type PreviewServer } from 'vite';
import { unzipSync } from 'fflate';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../../vite.config.js';

const root = new URL('../..', import.meta.url).pathname;
const shots = `${root}test-results/demo/`;
let server: PreviewServer;
let origin: string;
let browser: Browser;

beforeAll(async () => {
  mkdirSync(shots, { recursive: true });
  await build({ root, logLevel: 'warn', build: { outDir: `${root}dist-demo` } });
  server = await preview({ root, logLevel: 'warn', preview: { port: 0, host: '127.0.0.1' }, build: { outDir: `${root}dist-demo` } });
  origin = server.resolvedUrls!.local[0].replace(/\/$/, '');
  browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
}, 180_000);
afterAll(async () => {
  await browser?.close();
  await new Promise<void>((r) => (server ? server.httpServer.close(() => r()) : r()));
});

interface DemoState {
  phase: string;
  lastError: string | null;
  steps: { step: number; loss: number }[];
  evals: { step: number; loss: number }[];
  samples: { base: string; tuned: string };
}
const demoState = (page: Page) =>
  page.evaluate(() => {
    const { phase, lastError, steps, evals, samples } = (window as unknown as { demo: { state: DemoState } }).demo.state;
    return { phase, lastError, steps, evals, samples };
  });
const chartData = (page: Page) =>
  page.evaluate(() => (window as unknown as { demo: { chart: { data: { steps: number[]; train: (number | null)[]; validation: (number | null)[] } } } }).demo.chart.data);

async function openDemo(page: Page): Promise<void> {
  page.on('pageerror', (e) => console.error(`  [page error] ${e.stack ?? e.message}`));
  // Record any GPU device or queue use on the page thread: the demo's training belongs in its worker.
  await page.addInitScript(() => {
    const calls: string[] = ((window as unknown as { pageGpuCalls: string[] }).pageGpuCalls = []);
    for (const [proto, method] of [[GPUAdapter.prototype, 'requestDevice'], [GPUQueue.prototype, 'submit']] as const) {
      const original = (proto as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
      (proto as unknown as Record<string, unknown>)[method] = function (this: unknown, ...a: unknown[]) {
        calls.push(method);
        return original.apply(this, a);
      };
    }
  });
  await page.goto(`${origin}/demo/index.html`);
  await page.waitForFunction(() => (window as unknown as { demoReady?: boolean }).demoReady === true, undefined, { timeout: 60_000 });
}

async function waitPhase(page: Page, phases: string[], timeout = 240_000): Promise<DemoState> {
  await page.waitForFunction((want) => want.includes((window as unknown as { demo: { state: DemoState } }).demo.state.phase), phases, { timeout, polling: 100 });
  return demoState(page);
}

/** Fill the method section and start; returns when training ends. */
async function train(page: Page, o: { method: string; quantize?: string; steps: number; lr: string; selection?: string; choices?: Record<string, string>; fields?: Record<string, string> }): Promise<DemoState> {
  await page.selectOption('#method', o.method);
  if (o.quantize !== undefined) await page.selectOption('#quantize', o.quantize);
  if (o.selection) await page.selectOption('#selection', o.selection);
  for (const [id, value] of Object.entries(o.choices ?? {})) await page.selectOption(`#${id}`, value);
  for (const [id, value] of Object.entries(o.fields ?? {})) await page.fill(`#${id}`, value);
  await page.fill('#lr', o.lr);
  await page.fill('#steps', String(o.steps));
  await page.click('#start');
  const s = await waitPhase(page, ['done', 'idle']);
  expect(s.lastError).toBeNull();
  return s;
}

/** The fixture hub's tiny Llama as the model, with small batches and few held-out rows. */
async function chooseHubModel(page: Page, endpoint: string): Promise<void> {
  await page.selectOption('#model-kind', 'hub');
  await page.fill('#model-hub', 'fixtures/tiny-llama');
  await page.fill('#model-endpoint', endpoint);
  await page.fill('#batch-size', '2');
  await page.fill('#validation', '0.01');
}

describe('the demo page', () => {
  it('trains every method on the shipped model and data, with the loss falling on the chart', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    // The site's root sends a visitor to the demo.
    await page.goto(`${origin}/`);
    await page.waitForURL(/\/demo\/index\.html$/);
    await openDemo(page);
    expect(await page.textContent('#data-preview')).toMatch(/next-letter\.jsonl: 3000 rows, prompt-completion/);
    // Short runs: batches of 4, a few held-out rows, no evaluation or checkpoint mid-run.
    await page.fill('#batch-size', '4');
    await page.fill('#seq-len', '32');
    await page.fill('#validation', '0.01');
    await page.fill('#save-every', '1000');
    for (const [label, o] of [
      ['lora', { method: 'lora', quantize: '', steps: 6, lr: '0.005' }],
      ['qlora', { method: 'lora', quantize: 'nf4', steps: 6, lr: '0.005' }],
      ['full', { method: 'full', steps: 6, lr: '0.001' }],
      // Zeroth-order on every weight: LoRA's fields on the form (rank, targets) do not apply to it.
      ['zo', { method: 'zo', quantize: '', steps: 6, lr: '0.0001', choices: { 'zo-target': 'full' } }],
      ['lisa', { method: 'lisa', steps: 6, lr: '0.001' }],
      ['galore', { method: 'galore', steps: 6, lr: '0.003' }],
      // Sylva scores on fewer tokens than its default: the selection's cost is not what this test is about.
      ['sparse', { method: 'sparse', steps: 6, lr: '0.005', selection: 'sylva', fields: { 'calibration-tokens': '512' } }],
      ['sparse+lora', { method: 'sparse+lora', steps: 6, lr: '0.005', selection: 'random' }],
    ] as const) {
      const s = await train(page, o);
      expect(s.phase, label).toBe('done');
      const data = await chartData(page);
      const losses = data.train.filter((x): x is number => x !== null);
      const held = data.validation.filter((x): x is number => x !== null);
      expect(losses, label).toHaveLength(6);
      expect(held.length, label).toBeGreaterThanOrEqual(2); // before training, and at the end
      const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
      expect(mean(losses.slice(-3)), `${label}: the last steps' loss under the first steps'`).toBeLessThan(mean(losses.slice(0, 3)));
      expect(held.at(-1)!, `${label}: held-out loss falls`).toBeLessThan(held[0]);
      expect(s.evals.map((e) => e.step).filter((step) => step === 0), `${label}: one evaluation before training`).toHaveLength(1);
      if (label === 'sparse') expect(await page.textContent('#log')).toMatch(/sylva selection, [\d.]+% of \d+ layers in [\d.]+ s on 512 training tokens/);
      await page.screenshot({ path: `${shots}${label.replace('+', '-')}.png`, fullPage: true });
    }
    // The last run (sparse+lora) generates base and fine-tuned side by side.
    await page.click('#generate');
    await page.waitForFunction(() => (window as unknown as { demo: { state: DemoState } }).demo.state.samples.tuned !== '', undefined, { timeout: 60_000 });
    const samples = (await demoState(page)).samples;
    expect(samples.base.length).toBeGreaterThan(0);
    expect(await page.textContent('#out-tuned')).toBe(samples.tuned);
    await page.close();
  }, 600_000);

  it('downloads the adapter, and resumes a stopped run after a reload with the losses of an uninterrupted run', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    await openDemo(page);
    await page.fill('#batch-size', '4');
    await page.fill('#validation', '0.02');
    await page.fill('#save-every', '4');
    const whole = await train(page, { method: 'lora', quantize: '', steps: 10, lr: '0.005' });
    // Training runs in the worker: the page thread asked for no GPU device and submitted no GPU work.
    // (How long the page thread is blocked while training is a figure of the browser benchmark.)
    expect(await page.evaluate(() => (window as unknown as { pageGpuCalls: string[] }).pageGpuCalls)).toEqual([]);

    // "Save to browser" writes a checkpoint of the finished run too.
    await page.click('#save');
    await page.waitForFunction(() => /saved step 10\n/.test(document.getElementById('log')!.textContent!), undefined, { timeout: 30_000 });

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-adapter')]);
    const zip = unzipSync(new Uint8Array(readFileSync(await download.path())));
    expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const config = JSON.parse(new TextDecoder().decode(zip['adapter_config.json']));
    // The form starts at LoRA's own defaults (its option fields): rank 16, alpha 2 x rank, every linear layer.
    expect(config).toMatchObject({ peft_type: 'LORA', r: 16, lora_alpha: 32, task_type: 'CAUSAL_LM' });
    expect([...config.target_modules].sort()).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);

    // The same run, stopped after step 5: its checkpoint is in IndexedDB.
    await page.click('#start');
    await page.waitForFunction(
      () => {
        const s = (window as unknown as { demo: { state: DemoState } }).demo.state;
        return s.phase === 'running' && s.steps.length >= 5;
      },
      undefined,
      { timeout: 120_000, polling: 50 },
    );
    await page.click('#stop');
    const stopped = await waitPhase(page, ['done']);
    const stoppedAt = stopped.steps.at(-1)!.step;
    expect(await page.textContent('#stat-eta')).toBe(`cancelled at step ${stoppedAt}`);
    expect(stoppedAt).toBeLessThan(10);
    expect(stopped.steps.map((s) => s.loss)).toEqual(whole.steps.slice(0, stoppedAt).map((s) => s.loss));

    await page.reload();
    await page.waitForFunction(() => (window as unknown as { demoReady?: boolean }).demoReady === true);
    expect(await page.isVisible('#resume-banner')).toBe(true);
    expect(await page.textContent('#resume-text')).toMatch(new RegExp(`at step ${stoppedAt}\\b`));
    await page.screenshot({ path: `${shots}resume-offered.png`, fullPage: true });
    await page.click('#resume-run');
    const resumed = await waitPhase(page, ['done', 'idle']);
    expect(resumed.lastError).toBeNull();
    expect(resumed.steps.map((s) => s.step)).toEqual(whole.steps.slice(stoppedAt).map((s) => s.step));
    expect(resumed.steps.map((s) => s.loss)).toEqual(whole.steps.slice(stoppedAt).map((s) => s.loss));
    // The chart shows the whole run: the points before the reload came back with the run.
    expect((await chartData(page)).train.filter((x) => x !== null)).toEqual(whole.steps.map((s) => s.loss));
    await page.screenshot({ path: `${shots}resumed.png`, fullPage: true });
    await page.close();
  }, 400_000);

  it('loads a hub model with a progress bar, then from the browser cache with the hub gone', async () => {
    const { startHub } = await import('../fixtures/node-hub-server.js');
    const hub = await startHub();
    const page = await browser.newPage();
    await openDemo(page);
    await chooseHubModel(page, hub.endpoint);
    const first = await train(page, { method: 'lora', quantize: '', steps: 2, lr: '0.005' });
    expect(first.steps).toHaveLength(2);
    const downloads = await page.evaluate(() => (window as unknown as { demo: { state: { downloads: Record<string, { loaded: number; total: number; cached: boolean }> } } }).demo.state.downloads);
    expect(downloads['model.safetensors']).toMatchObject({ cached: false });
    expect(downloads['model.safetensors'].loaded).toBe(downloads['model.safetensors'].total);
    expect(await page.textContent('#log')).toMatch(/hub fixtures\/tiny-llama@main/);
    await hub.close();
    await page.reload();
    await page.waitForFunction(() => (window as unknown as { demoReady?: boolean }).demoReady === true);
    await chooseHubModel(page, hub.endpoint);
    const again = await train(page, { method: 'lora', quantize: '', steps: 2, lr: '0.005' });
    expect(again.steps.map((s) => s.loss)).toEqual(first.steps.map((s) => s.loss));
    const cached = await page.evaluate(() => (window as unknown as { demo: { state: { downloads: Record<string, { cached: boolean }> } } }).demo.state.downloads);
    expect(cached['model.safetensors'].cached).toBe(true);
    await page.close();
  }, 300_000);

  it('tells a browser without WebGPU what to use, in full view', async () => {
    const plain = await chromium.launch({ executablePath: CHROMIUM_PATH, args: ['--no-sandbox', '--disable-gpu', '--disable-features=WebGPU,Vulkan'], headless: true });
    try {
      const page = await plain.newPage({ viewport: { width: 1000, height: 700 } });
      await openDemo(page);
      const banner = page.locator('#no-webgpu');
      expect(await banner.isVisible()).toBe(true);
      expect(await banner.textContent()).toMatch(/WebGPU.*(Chrome|Edge).*Safari.*Firefox/);
      const box = (await banner.boundingBox())!;
      expect(box.y + box.height).toBeLessThanOrEqual(700);
      expect(box.x + box.width).toBeLessThanOrEqual(1000);
      expect(await page.isDisabled('#start')).toBe(true);
      await page.screenshot({ path: `${shots}no-webgpu.png` });
    } finally {
      await plain.close();
    }
  });
});
