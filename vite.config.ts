/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import { playwright } from '@vitest/browser-playwright';
import type { Plugin } from 'vite';
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
