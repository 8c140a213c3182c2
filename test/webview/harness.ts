// Loads a built webview bundle in headless Chromium inside the very HTML the
// host generates (same CSP and nonce), with acquireVsCodeApi stubbed so tests
// can post protocol messages and read what the webview posted and saved.
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { webviewHtml } from '../../extension/src/panels/webviewHtml';
import { buildBundles, OUT_DIR, ROOT } from './bundles';
import { THEMES, type ThemeKind } from './themes';

export const ORIGIN = 'https://webview.test';
export const SHOTS = path.join(ROOT, 'test-results/webview');

export async function launch(): Promise<Browser> {
  await buildBundles();
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
    ],
  });
}

export interface PanelPage {
  page: Page;
  /** Messages the webview posted to the "host". */
  posted(): Promise<unknown[]>;
  state(): Promise<unknown>;
  send(message: unknown): Promise<void>;
  cspViolations(): Promise<string[]>;
  errors: string[];
  screenshot(name: string): Promise<string>;
}

export interface OpenOptions {
  theme?: ThemeKind;
  width?: number;
  height?: number;
  /** What getState() returns, as after a reload. */
  state?: unknown;
}

export async function openPanel(
  browser: Browser,
  panel: 'dashboard' | 'router' | 'results',
  opts: OpenOptions = {},
): Promise<PanelPage> {
  const page = await browser.newPage({ viewport: { width: opts.width ?? 1280, height: opts.height ?? 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => {
    errors.push(String(e));
    if (process.env.HARNESS_DEBUG) console.log('pageerror', String(e));
  });
  page.on('console', (m) => {
    if (process.env.HARNESS_DEBUG) console.log('console', m.type(), m.text());
    if (m.type() === 'error') errors.push(m.text());
  });
  const theme = THEMES[opts.theme ?? 'dark'];
  // A string, not a function: tsx's transform would inject helpers the page lacks.
  await page.addInitScript(`
    window.__posted = [];
    window.__state = ${JSON.stringify(opts.state ?? null)};
    window.__csp = [];
    window.acquireVsCodeApi = function () {
      return {
        postMessage: function (m) { window.__posted.push(JSON.parse(JSON.stringify(m))); },
        getState: function () { return window.__state; },
        setState: function (s) { window.__state = JSON.parse(JSON.stringify(s)); },
      };
    };
    document.addEventListener('securitypolicyviolation', function (e) { window.__csp.push(e.violatedDirective + ' ' + e.blockedURI); });
    // VS Code puts the theme on <html style> and <body class>.
    document.addEventListener('DOMContentLoaded', function () {
      var vars = ${JSON.stringify(theme.vars)};
      for (var k in vars) document.documentElement.style.setProperty('--vscode-' + k, vars[k]);
      document.body.classList.add(${JSON.stringify(theme.bodyClass)});
    });
  `);
  const html = webviewHtml({
    title: panel,
    cspSource: ORIGIN,
    nonce: 'testnonce' + Math.random().toString(36).slice(2),
    scriptUri: `${ORIGIN}/dist/${panel}.js`,
    styleUri: `${ORIGIN}/dist/${panel}.css`,
  });
  await page.route(`${ORIGIN}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === '/index.html') return route.fulfill({ contentType: 'text/html', body: html });
    const file = path.join(OUT_DIR, path.basename(url.pathname));
    if (url.pathname.startsWith('/dist/') && fs.existsSync(file)) {
      return route.fulfill({
        contentType: file.endsWith('.css') ? 'text/css' : 'text/javascript',
        body: fs.readFileSync(file),
      });
    }
    return route.fulfill({ status: 404, body: '' });
  });
  await page.goto(`${ORIGIN}/index.html`);
  await page.waitForFunction(() =>
    ((window as unknown as { __posted: { type: string }[] }).__posted ?? []).some((m) => m.type === 'ready'),
  );
  return {
    page,
    errors,
    posted: () => page.evaluate(() => (window as unknown as { __posted: unknown[] }).__posted),
    state: () => page.evaluate(() => (window as unknown as { __state: unknown }).__state),
    // As a JSON string: Playwright's own serialization of large objects is slow.
    send: (message) =>
      page.evaluate(
        (json) => window.postMessage(json === undefined ? undefined : JSON.parse(json), '*'),
        JSON.stringify(message),
      ),
    cspViolations: () => page.evaluate(() => (window as unknown as { __csp: string[] }).__csp),
    screenshot: async (name) => {
      fs.mkdirSync(SHOTS, { recursive: true });
      const file = path.join(SHOTS, `${name}.png`);
      await page.screenshot({ path: file, fullPage: false });
      return file;
    },
  };
}

/** Resolves after the webview has painted twice (appends are drawn on the next animation frame). */
export async function settled(page: Page): Promise<void> {
  await page.evaluate(
    () =>
      new Promise<void>((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 0)))),
  );
}
