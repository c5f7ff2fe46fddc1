/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import { playwright } from '@vitest/browser-playwright';
import type { Plugin } from 'vite';
import { existsSync, readFileSync } from 'node:fs';
import { hubMiddleware } from './test/fixtures/hub-middleware';
import { hostileMiddleware } from './test/fixtures/hostile-server';

/**
 * Test fixtures in the hub's URL layout at /hub/, so browser tests load models over HTTP like users do,
 * and the same behind a misbehaving server at /hostile/{mode}/hub/ (see test/fixtures/hostile-server.ts).
 */
function fixtureHub(): Plugin {
  return {
    name: 'fixture-hub',
    configureServer(server) {
      const handler = hubMiddleware();
      server.middlewares.use('/hub', (req, res, next) => void handler(req, res, next));
      const hostile = hostileMiddleware();
      server.middlewares.use('/hostile', (req, res) => void hostile(req, res));
    },
  };
}

/** Debian's chromium; never a downloaded browser. Override with CHROMIUM_PATH. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Flags for headless Chromium with WebGPU. SwiftShader is the adapter when there is no GPU; the network
 * flags stop Chromium from reaching for Google services on machines without internet.
 */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--use-webgpu-adapter=swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const testTimeout = 120_000;

/**
 * The second adapter: Mesa's lavapipe (scripts/lavapipe.sh, which `npm test` runs first), with shader-f16
 * and subgroups, at subgroup size 8 (LP_NATIVE_VECTOR_WIDTH 256: kernel, device and model tests) and, on
 * CPUs with AVX-512, 16 (512: the kernel tests, and the test that the adapter has that width).
 * Both variables are read when a process first creates a Vulkan instance, which each test file's fresh
 * worker does. Without the extracted driver (vitest run by hand) these projects are left out.
 */
const LAVAPIPE_ICD = new URL('./.lavapipe/lvp_icd.json', import.meta.url).pathname;
const lavapipeWidths = existsSync(LAVAPIPE_ICD) ? [256, ...(/\bavx512f\b/.test(cpuFlags()) ? [512] : [])] : [];
function cpuFlags(): string {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

export default defineConfig({
  // `npm run build:demo`: the demo page as static files in dist-demo/ (the page at demo/index.html, the
  // root index.html sending `/` there, the shipped models and datasets beside it), served by any static host.
  build: { outDir: 'dist-demo', emptyOutDir: true, target: 'es2022', rollupOptions: { input: ['index.html', 'demo/index.html'] } },
  worker: { format: 'es' },
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'node',
          environment: 'node',
          include: ['test/**/*.test.ts'],
          testTimeout,
          hookTimeout: testTimeout,
        },
      },
      ...lavapipeWidths.map((width) => ({
        test: {
          name: `lavapipe-${width / 32}`,
          environment: 'node',
          // The kernels at both widths (what a subgroup size can change); the device's own tests and the
          // whole model at the first (a device without subgroups, say, is the same device at any width).
          include: ['test/kernels/**/*.test.ts', 'test/gpu/adapter.node.test.ts', ...(width === lavapipeWidths[0] ? ['test/gpu/**/*.test.ts', 'test/model/**/*.test.ts'] : [])],
          // Not about the device: the JS heap and allocation failures (leaks), and the shipped base's
          // pre-training; both run on the default adapter.
          exclude: ['test/gpu/leaks.node.test.ts', 'test/model/pretrained-base.node.test.ts'],
          env: { VK_ICD_FILENAMES: LAVAPIPE_ICD, LP_NATIVE_VECTOR_WIDTH: String(width) },
          testTimeout,
          hookTimeout: testTimeout,
        },
      })),
      {
        plugins: [fixtureHub()],
        // The README's browser example imports the package by name: in the browser tests, its source.
        resolve: { alias: { 'webgpu-finetune': new URL('./src/index.ts', import.meta.url).pathname } },
        test: {
          name: 'chromium',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.node.test.ts'],
          testTimeout,
          hookTimeout: testTimeout,
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({ launchOptions: { executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS } }),
            instances: [{ browser: 'chromium' }],
          },
        },
      },
    ],
  },
});
