/** Serve the project with Vite on localhost and open a page in headless Chromium (Playwright, Debian's chromium). */
import { chromium, type Browser, type Page } from 'playwright';
import { createServer, type ViteDevServer } from 'vite';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../vite.config.js';

export interface BrowserSession {
  page: Page;
  close(): Promise<void>;
}

export async function openPage(path: string): Promise<BrowserSession> {
  const server: ViteDevServer = await createServer({
    configFile: false,
    root: new URL('..', import.meta.url).pathname,
    logLevel: 'warn',
    server: { port: 0, host: '127.0.0.1' },
  });
  await server.listen();
  const address = server.httpServer!.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`  [page] ${m.text()}`));
  await page.goto(`http://127.0.0.1:${port}/${path}`);
  return {
    page,
    async close() {
      await browser.close();
      await server.close();
    },
  };
}
