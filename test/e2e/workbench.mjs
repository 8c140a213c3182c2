// A real VS Code workbench for the end-to-end tests: code-server (VS Code 1.100.3 server + web
// UI, a real extension host) on 127.0.0.1 without auth, driven by playwright-core and Debian's
// /usr/bin/chromium (installed by install.sh in this folder; README.md here lists the pitfalls
// this works around). Every server gets fresh user-data and extensions dirs.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';

/** Settings that keep the workbench quiet and deterministic. */
export const BASE_SETTINGS = {
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.enableExperiments': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'extensions.ignoreRecommendations': true,
  'git.enabled': false,
  'chat.disableAIFeatures': true,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  // xterm's DOM renderer: the terminal's text is in the DOM, so the test can read it.
  'terminal.integrated.gpuAcceleration': 'off',
  'terminal.integrated.enablePersistentSessions': false,
  'editor.minimap.enabled': false,
  'editor.hover.delay': 100,
  'files.simpleDialog.enable': true,
};

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts code-server with `vsix` installed and a headless Chromium on it.
 * opts: { prefix, vsix, dir (scratch dir of this server), outDir, settings, trust (bool), env, log }
 */
export async function startWorkbench(opts) {
  const { prefix, vsix, dir, outDir, log } = opts;
  const requireFromPrefix = createRequire(path.join(prefix, 'package.json'));
  const { chromium } = requireFromPrefix('playwright-core');
  const entry = path.join(prefix, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
  const nodeFile = path.join(prefix, 'node-path.txt');
  const serverNode = fs.existsSync(nodeFile) ? fs.readFileSync(nodeFile, 'utf8').trim() : process.execPath;

  const userDataDir = path.join(dir, 'user-data');
  const extensionsDir = path.join(dir, 'extensions');
  for (const d of [path.join(userDataDir, 'User'), extensionsDir, outDir])
    fs.mkdirSync(d, { recursive: true });
  const settings = {
    ...BASE_SETTINGS,
    'security.workspace.trust.enabled': !!opts.trust,
    ...(opts.settings ?? {}),
  };
  fs.writeFileSync(path.join(userDataDir, 'User', 'settings.json'), JSON.stringify(settings, null, 2));
  const configFile = path.join(dir, 'code-server.yaml');
  fs.writeFileSync(configFile, 'auth: none\ncert: false\n');

  const t0 = Date.now();
  const inst = spawnSync(
    serverNode,
    [
      entry,
      '--config',
      configFile,
      '--user-data-dir',
      userDataDir,
      '--extensions-dir',
      extensionsDir,
      '--install-extension',
      vsix,
    ],
    {
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
  if (inst.status !== 0) throw new Error(`--install-extension ${vsix} failed: ${inst.stdout}${inst.stderr}`);
  log(`installed ${path.basename(vsix)} in ${Date.now() - t0} ms`);

  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const serverLog = fs.openSync(path.join(outDir, 'code-server.log'), 'w');
  const args = [
    entry,
    '--config',
    configFile,
    '--auth',
    'none',
    '--bind-addr',
    `127.0.0.1:${port}`,
    '--user-data-dir',
    userDataDir,
    '--extensions-dir',
    extensionsDir,
    '--disable-telemetry',
    '--disable-update-check',
    '--disable-getting-started-override',
    '--disable-file-downloads',
  ];
  if (!opts.trust) args.push('--disable-workspace-trust');
  const server = spawn(serverNode, args, {
    stdio: ['ignore', serverLog, serverLog],
    detached: true,
    env: {
      ...process.env,
      VSCODE_PROXY_URI: '',
      OMP_NUM_THREADS: process.env.OMP_NUM_THREADS || '1',
      ...(opts.env ?? {}),
    },
  });
  let browser;
  const close = async () => {
    try {
      if (browser) await browser.close();
    } catch {
      /* ignore */
    }
    // code-server forks children (extension host, pty host, tasks): the whole group is ours.
    try {
      process.kill(-server.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await sleep(500);
    try {
      process.kill(-server.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    fs.closeSync(serverLog);
  };
  try {
    const tServer = Date.now();
    for (;;) {
      if (Date.now() - tServer > 60_000)
        throw new Error('code-server did not start within 60 s; see code-server.log');
      if (server.exitCode !== null)
        throw new Error(`code-server exited with ${server.exitCode}; see code-server.log`);
      try {
        if ((await fetch(`${baseUrl}/healthz`)).ok) break;
      } catch {
        /* not yet */
      }
      await sleep(100);
    }
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      env: {
        ...process.env,
        XDG_CONFIG_HOME: path.join(dir, 'xdg-config'),
        XDG_CACHE_HOME: path.join(dir, 'xdg-cache'),
      },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
    });
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(60_000);
    const consoleErrors = [];
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    return { page, baseUrl, close, consoleErrors, server };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Opens `folder` in the workbench and waits for the explorer to show `fileName`. */
export async function openFolder(page, baseUrl, folder, fileName) {
  await page.goto(`${baseUrl}/?folder=${encodeURIComponent(folder)}`);
  await page.locator('.monaco-workbench').waitFor();
  if (fileName)
    await page.locator('.explorer-folders-view .monaco-list-row', { hasText: fileName }).first().waitFor();
}

/** F1, the command's title, Enter. `title` is what the palette shows ("MoE Lab: Run Demo"). */
export async function runCommand(page, title, timeoutMs = 60_000) {
  const row = page
    .locator('.quick-input-list .monaco-list-row', {
      has: page.locator('.label-name', { hasText: new RegExp(`^${escapeRe(title)}$`) }),
    })
    .first();
  // The palette lists the commands known when it opens; an extension's contributions arrive a
  // moment after the workbench shows, so reopen it until the command is there.
  const t0 = Date.now();
  for (;;) {
    await openPalette(page, `>${title}`);
    try {
      await row.waitFor({ timeout: 3000 });
      break;
    } catch (e) {
      if (Date.now() - t0 > timeoutMs)
        throw new Error(`command "${title}" not in the palette after ${timeoutMs} ms`);
    }
  }
  await row.click();
}

/** Opens the palette with `text` typed in. */
export async function openPalette(page, text) {
  const input = page.locator('.quick-input-widget input');
  for (let attempt = 0; ; attempt++) {
    // Escape only closes an open palette: in an editor it would drop the selection.
    if (await input.isVisible()) await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    try {
      await input.waitFor({ timeout: 5000 });
      break;
    } catch (e) {
      if (attempt >= 2) throw e;
      await page
        .locator('.monaco-workbench .part.statusbar')
        .click({ position: { x: 5, y: 5 } })
        .catch(() => {});
    }
  }
  await input.fill(text);
}

/** Titles of the palette rows shown for `text` (after the list settles). */
export async function paletteTitles(page, text) {
  await openPalette(page, text);
  await sleep(800);
  const titles = await page.locator('.quick-input-list .monaco-list-row .label-name').allTextContents();
  await page.keyboard.press('Escape');
  return titles.map((t) => t.trim());
}

export function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The webview frame (inner iframe) whose document has `selector`; polls until `timeoutMs`. */
export async function webviewFrame(page, selector, timeoutMs = 60_000) {
  const t0 = Date.now();
  for (;;) {
    for (const f of page.frames()) {
      if (f === page.mainFrame()) continue;
      try {
        if ((await f.locator(selector).count()) > 0) return f;
      } catch {
        /* frame navigating or detached */
      }
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`no webview shows ${selector} within ${timeoutMs} ms`);
    await sleep(250);
  }
}

/** Polls `fn` (async, returns truthy when done) every `everyMs` until `timeoutMs`; returns its value.
 * Errors thrown by `fn` count as "not yet", except those with `fatal: true`. */
export async function until(what, fn, timeoutMs = 60_000, everyMs = 200) {
  const t0 = Date.now();
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      if (e?.fatal) throw e; // no point in waiting longer
      last = e;
    }
    if (Date.now() - t0 > timeoutMs)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? ` (${last.message})` : ''}`,
      );
    await sleep(everyMs);
  }
}

export { sleep };
