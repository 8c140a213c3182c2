#!/usr/bin/env node
// End-to-end tests of MoE Lab in a real VS Code workbench (code-server 4.100.3, headless
// Chromium). `npm run test:e2e` (the Makefile's test-e2e):
//
//   1. installs code-server + playwright-core with test/e2e/install.sh (idempotent, cached in
//      $VSCODE_E2E_PREFIX, default ~/.cache/vscode-e2e),
//   2. builds the .vsix (npm run package -- --target linux-x64) when it is missing or older than
//      the sources,
//   3. walks the user's path in a trusted workspace whose moelab.pythonPath is the repository's
//      .venv: Run Demo → task terminal → Runs view running → done → dashboard → router panel →
//      Checkpoints view down to a BAM checkpoint's attention experts → Inspect Routing,
//   4. a fresh machine: the workspace's interpreter (python3) has no engine; Run Demo offers a
//      dedicated environment, creates it, installs torch and the engine, runs the demo, draws a curve,
//   5. opens a workspace in Restricted Mode: runs are shown, no job can start.
//
// Screenshots of every step land in test-results/e2e/ (git-ignored). Env: E2E_KEEP=1 keeps the
// temp dirs, E2E_ONLY=walk,fresh,restricted picks scenarios, CHROMIUM=path, E2E_PYTHON=the engine's
// python (default: this repository's .venv).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  openFolder,
  openPalette,
  paletteTitles,
  runCommand,
  sleep,
  startWorkbench,
  until,
  webviewFrame,
} from './workbench.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const prefix = path.resolve(process.env.VSCODE_E2E_PREFIX || path.join(os.homedir(), '.cache', 'vscode-e2e'));
const outDir = path.join(root, 'test-results', 'e2e');
// docs/screenshots/<file> <- the walk's screenshot with this label (E2E_DOCS_SCREENSHOTS=1).
const DOC_SCREENSHOTS = {
  'runs.png': 'runs-running',
  'dashboard.png': 'dashboard',
  'router-panel.png': 'router-panel',
  'results.png': 'results',
  'checkpoints.png': 'checkpoints-bam-attention-experts',
  'lineage.png': 'lineage',
  'inspector.png': 'inspect-hover',
};
// E2E_PYTHON: an engine interpreter elsewhere (a git worktree without its own .venv).
const venvPython = process.env.E2E_PYTHON || path.join(root, '.venv', 'bin', 'python');
const only = process.env.E2E_ONLY ? new Set(process.env.E2E_ONLY.split(',')) : undefined;

const t0 = Date.now();
const log = (...a) => console.log(`[e2e +${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const results = [];

// ---- 1. code-server + playwright-core ------------------------------------------------------
function sh(cmd, args, what) {
  const t = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`[e2e] ${what} failed (${r.status ?? r.signal})`);
    process.exit(1);
  }
  log(`${what}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
}
sh('bash', [path.join(here, 'install.sh'), prefix], 'install.sh');

// ---- 2. the .vsix ----------------------------------------------------------------------------
const vsix = path.join(root, 'dist', `${pkg.name}-linux-x64-${pkg.version}.vsix`);
function newestMtime(p) {
  if (!fs.existsSync(p)) return 0;
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let m = st.mtimeMs;
  for (const e of fs.readdirSync(p))
    if (e !== '__pycache__' && e !== 'node_modules') m = Math.max(m, newestMtime(path.join(p, e)));
  return m;
}
const sources = [
  'package.json',
  'esbuild.mjs',
  '.vscodeignore',
  'scripts/package.mjs',
  'extension/src',
  'webview/src',
  'media',
  'engine/moelab',
].map((p) => path.join(root, p));
if (!fs.existsSync(vsix) || fs.statSync(vsix).mtimeMs < Math.max(...sources.map(newestMtime))) {
  sh('npm', ['run', '-s', 'package', '--', '--target', 'linux-x64'], 'package .vsix');
} else {
  log(`using ${path.relative(root, vsix)} (newer than the sources)`);
}
if (!fs.existsSync(venvPython)) {
  console.error(`[e2e] ${venvPython} is missing: run make setup first`);
  process.exit(1);
}

fs.rmSync(outDir, { recursive: true, force: true });
fs.mkdirSync(outDir, { recursive: true });
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-e2e-'));

// ---- a tiny harness: steps in order; after a failure the scenario's remaining steps are skipped.
function scenario(name) {
  let failed = false;
  let shot = 0;
  const dir = path.join(outDir, name);
  fs.mkdirSync(dir, { recursive: true });
  return {
    dir,
    async step(title, page, fn) {
      if (failed) {
        results.push({ scenario: name, step: title, status: 'skipped' });
        log(`- ${name}: ${title} (skipped)`);
        return;
      }
      const t = Date.now();
      try {
        await fn();
        const ms = Date.now() - t;
        results.push({ scenario: name, step: title, status: 'passed', ms });
        log(`✓ ${name}: ${title} (${ms} ms)`);
      } catch (e) {
        failed = true;
        results.push({
          scenario: name,
          step: title,
          status: 'failed',
          ms: Date.now() - t,
          error: String(e?.stack ?? e),
        });
        log(`✗ ${name}: ${title}\n${e?.stack ?? e}`);
        if (page)
          await page
            .screenshot({ path: path.join(dir, `failure-${title.replace(/\W+/g, '-')}.png`) })
            .catch(() => {});
      }
    },
    async screenshot(page, label) {
      shot++;
      const file = path.join(dir, `${String(shot).padStart(2, '0')}-${label}.png`);
      await page.screenshot({ path: file });
      return file;
    },
    get failed() {
      return failed;
    },
  };
}

function writeWorkspace(dir, settings, files = {}) {
  fs.mkdirSync(path.join(dir, '.vscode'), { recursive: true });
  fs.writeFileSync(path.join(dir, '.vscode', 'settings.json'), JSON.stringify(settings, null, 2));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
}

const SAMPLE = `def gcd(a, b):
    # Euclid: the remainder shrinks every step.
    while b:
        a, b = b, a % b
    return a

print(gcd(1071, 462))  # 21
The quick brown fox jumps over the lazy dog. 12 + 30 = 42.
`;

/** Rows of a tree pane (its header's text), as [label, description] pairs (what is rendered). */
async function treeRows(page, paneTitle) {
  const pane = page.locator('.pane', { has: page.locator('.pane-header', { hasText: paneTitle }) });
  return pane.locator('.monaco-list-row').evaluateAll((rows) =>
    rows.map((r) => ({
      label: r.querySelector('.label-name')?.textContent?.trim() ?? '',
      description: r.querySelector('.label-description')?.textContent?.trim() ?? '',
      icon: [...(r.querySelector('.custom-view-tree-node-item-icon')?.classList ?? [])].join(' '),
      expanded: r.getAttribute('aria-expanded'),
    })),
  );
}

/** Rows of a tree pane with their depth (aria-level, 1 = top) and whether they are selected. */
async function treeRowsWithLevel(page, paneTitle) {
  const pane = page.locator('.pane', { has: page.locator('.pane-header', { hasText: paneTitle }) });
  return pane.locator('.monaco-list-row').evaluateAll((rows) =>
    rows.map((r) => ({
      label: r.querySelector('.label-name')?.textContent?.trim() ?? '',
      description: r.querySelector('.label-description')?.textContent?.trim() ?? '',
      level: Number(r.getAttribute('aria-level')),
      selected: r.getAttribute('aria-selected') === 'true',
    })),
  );
}

async function expandPane(page, paneTitle) {
  const header = page.locator('.pane-header', { hasText: paneTitle }).first();
  await header.waitFor();
  if ((await header.getAttribute('aria-expanded')) !== 'true') await header.click();
}

async function collapsePane(page, paneTitle) {
  const header = page.locator('.pane-header', { hasText: paneTitle }).first();
  await header.waitFor();
  if ((await header.getAttribute('aria-expanded')) === 'true') await header.click();
}

/** Clicks the tree row whose label is exactly `label` (and whose description matches, if given) and waits for it to expand. */
async function expandRow(page, paneTitle, label, description) {
  const pane = page.locator('.pane', { has: page.locator('.pane-header', { hasText: paneTitle }) });
  let row = pane.locator('.monaco-list-row', {
    has: page.locator('.label-name', {
      hasText: new RegExp(`^${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`),
    }),
  });
  if (description) row = row.filter({ has: page.locator('.label-description', { hasText: description }) });
  row = row.first();
  await row.waitFor();
  if ((await row.getAttribute('aria-expanded')) !== 'true') await row.locator('.monaco-tl-twistie').click();
  await until(`${label} expanded`, async () => (await row.getAttribute('aria-expanded')) === 'true', 30_000);
  return row;
}

/** Over the canvases matching `selector`: the most pixels that differ from the first pixel (0 = all
 * blank), or with `distinct`, the most distinct colours (capped at 64). */
function canvasInk(frame, selector, distinct = false) {
  return frame.locator(selector).evaluateAll((cs, distinct) => {
    let best = 0;
    for (const c of cs) {
      if (!c.width || !c.height) continue;
      // Copy onto a fresh 2D canvas: works whatever context the original uses.
      const copy = document.createElement('canvas');
      copy.width = c.width;
      copy.height = c.height;
      const ctx = copy.getContext('2d');
      ctx.drawImage(c, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      const colours = new Set();
      for (let i = 0; i < d.length; i += 4) {
        if (i && (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3])) n++;
        if (colours.size < 64) colours.add((d[i] << 24) | (d[i + 1] << 16) | (d[i + 2] << 8) | d[i + 3]);
      }
      best = Math.max(best, distinct ? colours.size : n);
    }
    return best;
  }, distinct);
}

/** Hides the bottom panel (terminal) so that a screenshot shows the editor area whole. */
async function hidePanel(page) {
  const panel = page.locator('.part.panel');
  if (!(await panel.isVisible())) return;
  const hide = page.locator('.part.panel .action-label[aria-label^="Hide Panel"]').first();
  if (await hide.isVisible()) await hide.click();
  else await page.keyboard.press('Control+J');
  await until('the panel to hide', async () => !(await panel.isVisible()), 10_000);
}

/** Dismisses the toasts (one per finished run after the demo) that would cover a screenshot. */
async function clearNotifications(page) {
  if (!(await page.locator('.notification-toast').count())) return;
  await runCommand(page, 'Notifications: Clear All Notifications');
  await until(
    'the toasts to go',
    async () => (await page.locator('.notification-toast').count()) === 0,
    10_000,
  ).catch(() => {});
}

/** Text of MoE Lab error toasts on screen ('' when none). */
async function errorToasts(page) {
  const toasts = page.locator('.notification-toast', { has: page.locator('.codicon-error') });
  return (await toasts.allTextContents()).join(' | ');
}

/** The CSP the panel really runs under (its <meta>): strict, nonce-only scripts, nothing inline. */
async function checkCsp(frame, panel) {
  const csp = await frame.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content');
  if (!csp) throw new Error(`${panel}: no Content-Security-Policy`);
  const d = new Map(
    csp
      .split(';')
      .map((x) => x.trim().split(/\s+/))
      .map(([k, ...v]) => [k, v]),
  );
  const problems = [];
  if (/unsafe-inline|unsafe-eval|unsafe-hashes/.test(csp)) problems.push('unsafe-*');
  if ((d.get('default-src') ?? []).join(' ') !== "'none'") problems.push('default-src');
  const script = d.get('script-src') ?? [];
  if (script.length !== 1 || !/^'nonce-[A-Za-z0-9+/=]{16,}'$/.test(script[0]))
    problems.push(`script-src ${script.join(' ')}`);
  // Other sources: only webview.cspSource, i.e. the workbench's resource origin ('self' and
  // *.vscode-cdn.net here), which serves nothing but localResourceRoots (the extension's dist/webview).
  for (const [k, v] of d)
    if (
      k !== 'script-src' &&
      k !== 'default-src' &&
      v.some(
        (src) => !["'self'", 'data:'].includes(src) && !/^https:\/\/[*\w.+-]*vscode-(cdn|resource)/.test(src),
      )
    )
      problems.push(`${k} ${v.join(' ')}`);
  // Our scripts all carry the nonce; the only inline one is the workbench's acquireVsCodeApi shim.
  const inline = await frame
    .locator('script:not([src]):not(#_vscodeApiScript)')
    .evaluateAll((els) => els.map((e) => e.outerHTML.slice(0, 120)));
  const handlers = await frame.locator('[onload], [onclick], [onerror], [onmouseover]').count();
  if (handlers) problems.push(`${handlers} inline handler(s)`);
  const ours = await frame
    .locator('script[src]')
    .evaluateAll((els) => els.map((e) => e.nonce || e.getAttribute('nonce') || ''));
  if (!ours.length || ours.some((n) => !n)) problems.push(`scripts without nonce: ${JSON.stringify(ours)}`);
  if (inline.length) problems.push(`inline script(s): ${inline.join(' | ')}`);
  if (problems.length) throw new Error(`${panel} CSP: ${problems.join('; ')} — ${csp}`);
  return csp;
}

function runDirs(runsDir) {
  if (!fs.existsSync(runsDir)) return [];
  return fs
    .readdirSync(runsDir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(runsDir, e.name, 'run.json')))
    .map((e) => e.name)
    .sort();
}

// ---- 3. the user's path ------------------------------------------------------------------------
const walkWorkspace = path.join(scratch, 'walk', 'demo workspace');
async function walk() {
  const s = scenario('walk');
  fs.mkdirSync(walkWorkspace, { recursive: true });
  writeWorkspace(
    walkWorkspace,
    { 'moelab.pythonPath': venvPython, 'moelab.device': 'cpu' },
    { 'sample.py': SAMPLE },
  );
  const wb = await startWorkbench({
    prefix,
    vsix,
    dir: path.join(scratch, 'walk'),
    outDir: s.dir,
    trust: false,
    log,
  });
  const { page } = wb;
  const runsDir = path.join(walkWorkspace, 'runs');
  try {
    await s.step('workbench opens the workspace', page, async () => {
      await openFolder(page, wb.baseUrl, walkWorkspace, 'sample.py');
    });

    let sawRunning = false;
    await s.step('Run Demo from the palette starts the demo task', page, async () => {
      await runCommand(page, 'MoE Lab: Run Demo');
      // The task's terminal opens with the engine's progress lines.
      await until(
        'progress in the task terminal',
        async () =>
          /\[demo-[\w-]+\] step \d+\/\d+/.test(
            (await page.locator('.terminal-wrapper .xterm-rows').allTextContents()).join('\n'),
          ),
        120_000,
        100,
      );
      await page
        .locator('.terminal-tab, .single-terminal-tab, .tabs-list .monaco-list-row', {
          hasText: /MoE Lab demo/,
        })
        .first()
        .waitFor({ timeout: 10_000 })
        .catch(() => {});
      await s.screenshot(page, 'task-terminal-progress');
    });

    await s.step('Runs view shows a run running', page, async () => {
      await expandPane(page, 'Runs');
      await until(
        'a running run in the Runs view',
        async () => {
          const rows = await treeRows(page, 'Runs');
          if (rows.some((r) => /running/.test(r.description) || /codicon-sync/.test(r.icon))) {
            sawRunning = true;
            return true;
          }
          return false;
        },
        120_000,
        100,
      );
      await s.screenshot(page, 'runs-running');
    });

    await s.step('Runs view shows every run done when the demo ends', page, async () => {
      await until(
        'the demo task to finish',
        // The demo's last line, or the task's end marker (whichever is on screen).
        async () =>
          /Runs: .*Table: |Terminal will be reused by tasks/.test(
            (await page.locator('.terminal-wrapper .xterm-rows').allTextContents()).join('\n'),
          ),
        300_000,
        250,
      );
      const ids = runDirs(runsDir);
      if (ids.length < 8) throw new Error(`expected at least 8 runs under ${runsDir}, found ${ids.length}`);
      for (const id of ids) {
        const st = JSON.parse(fs.readFileSync(path.join(runsDir, id, 'run.json'), 'utf8')).status;
        if (st !== 'done') throw new Error(`run ${id} is ${st} on disk`);
      }
      // The experiment row counts its runs by status: all done, none running.
      await until(
        `the Runs view to count ${ids.length} done`,
        async () => {
          const rows = await treeRows(page, 'Runs');
          const shownRuns = rows.filter((r) => ids.includes(r.label));
          return (
            rows.some((r) => r.description === `${ids.length} done`) &&
            !rows.some((r) => /running/.test(r.description) || /codicon-sync/.test(r.icon)) &&
            shownRuns.length > 0 &&
            shownRuns.every((r) => /codicon-pass/.test(r.icon))
          );
        },
        30_000,
      );
      if (!sawRunning) throw new Error('never saw a running run');
      await s.screenshot(page, 'runs-done');
    });

    await s.step('dashboard shows one loss curve per run', page, async () => {
      await runCommand(page, 'MoE Lab: Open Dashboard');
      const frame = await webviewFrame(page, 'figure[data-metric="train/loss"]');
      await checkCsp(frame, 'dashboard');
      // Every run is in the legend; the loss chart has one curve per run that logged a train loss.
      const ids = runDirs(runsDir);
      const withLoss = ids.filter((id) => {
        const f = path.join(runsDir, id, 'metrics.jsonl');
        return (
          fs.existsSync(f) &&
          fs
            .readFileSync(f, 'utf8')
            .split('\n')
            .some((l) => /"split":\s*"train"/.test(l) && /"loss":\s*[\d.]/.test(l))
        );
      });
      if (withLoss.length < 8) throw new Error(`only ${withLoss.length} runs logged a train loss`);
      await until(
        `${ids.length} runs in the legend`,
        async () => (await frame.locator('.legend-item').count()) === ids.length,
        30_000,
      );
      const legend = (await frame.locator('.legend-item').allTextContents()).join(' ');
      for (const id of ids) if (!legend.includes(id)) throw new Error(`legend lacks ${id}: ${legend}`);
      const loss = frame.locator('figure[data-metric="train/loss"]');
      await until(
        `one train/loss curve for each of ${withLoss.join(', ')}`,
        async () =>
          JSON.stringify(JSON.parse((await loss.getAttribute('data-series')) ?? '[]').sort()) ===
          JSON.stringify([...withLoss].sort()),
        30_000,
      );
      await until(
        'ink on the loss chart',
        async () => (await canvasInk(frame, 'figure[data-metric="train/loss"] canvas')) > 500,
        30_000,
      );
      await hidePanel(page);
      await clearNotifications(page);
      await loss.evaluate((e) => e.scrollIntoView({ block: 'center' }));
      await s.screenshot(page, 'dashboard');
    });

    await s.step('router panel shows an expert-load heatmap', page, async () => {
      await runCommand(page, 'MoE Lab: Open Router Panel');
      const frame = await webviewFrame(page, 'canvas.heat');
      await checkCsp(frame, 'router panel');
      // One cell per expert and router: a few pixels, scaled up by CSS; several colours = loads differ.
      await until(
        'a coloured heatmap',
        async () => (await canvasInk(frame, 'canvas.heat', true)) >= 4,
        30_000,
      );
      const labels = await frame
        .locator('canvas.heat')
        .evaluateAll((cs) => cs.map((c) => c.getAttribute('aria-label')));
      if (!labels.some((l) => /Utilization/.test(l ?? '')))
        throw new Error(`no expert-load heatmap: ${labels.join(' | ')}`);
      await s.screenshot(page, 'router-panel');
    });

    await s.step(
      "Results panel shows the demo table and the papers' claims with verdicts",
      page,
      async () => {
        // The quick demo writes runs/study.json (one seed) and the eval run's eval.json: the palette
        // command offers both, study.json first.
        const study = JSON.parse(fs.readFileSync(path.join(runsDir, 'study.json'), 'utf8'));
        await runCommand(page, 'MoE Lab: Open Results');
        // The palette's own list goes first: wait for the command's pick (its title), then take study.json.
        await until(
          'the results quick pick',
          async () =>
            /open which results/i.test(
              (await page.locator('.quick-input-widget .quick-input-title').textContent()) ?? '',
            ),
          30_000,
        );
        await until(
          'study.json offered first',
          async () =>
            /study\.json/.test(
              (await page.locator('.quick-input-widget .monaco-list-row').first().textContent()) ?? '',
            ),
          30_000,
        );
        await page.keyboard.press('Enter');
        const frame = await webviewFrame(page, 'table.results-table');
        await checkCsp(frame, 'results panel');
        const labels = await frame
          .locator('table.results-table tbody tr[data-label]')
          .evaluateAll((els) => els.map((e) => e.getAttribute('data-label')));
        for (const label of Object.keys(study.settings[0].models))
          if (!labels.includes(label)) throw new Error(`results table lacks ${label}: ${labels.join(', ')}`);
        const verdicts = await frame
          .locator('[data-verdict]')
          .evaluateAll((els) => els.map((e) => e.getAttribute('data-verdict')));
        const want = study.settings[0].claims.map((c) => c.verdict);
        if (JSON.stringify(verdicts) !== JSON.stringify(want))
          throw new Error(
            `verdicts on screen ${JSON.stringify(verdicts)}, study.json ${JSON.stringify(want)}`,
          );
        await s.screenshot(page, 'results');
      },
    );

    await s.step('Checkpoints view expands a BAM checkpoint to its attention experts', page, async () => {
      await page.keyboard.press('Escape');
      // The MoE Lab side bar: collapse Runs so that Checkpoints has the room.
      await collapsePane(page, 'Runs');
      await expandPane(page, 'Checkpoints');
      await expandRow(page, 'Checkpoints', 'demo-moe-bam-ekv');
      const ckpt = fs
        .readFileSync(path.join(runsDir, 'demo-moe-bam-ekv', 'checkpoints', 'latest'), 'utf8')
        .trim();
      await expandRow(page, 'Checkpoints', ckpt);
      await expandRow(page, 'Checkpoints', 'Layers');
      await expandRow(page, 'Checkpoints', 'layer 0');
      const group = await expandRow(page, 'Checkpoints', 'Attention experts');
      const groupDesc = (await group.locator('.label-description').textContent())?.trim() ?? '';
      if (!/^\d+ experts · [\d.]+[KMB]? params$/.test(groupDesc))
        throw new Error(`Attention experts row says "${groupDesc}"`);
      await expandRow(page, 'Checkpoints', 'expert 0');
      // The expert's tensors arrive a moment after the row says it is expanded.
      const rows = await until(
        'q/k/v/o tensors under expert 0',
        async () => {
          const r = await treeRows(page, 'Checkpoints');
          const i = r.findIndex((x) => x.label === 'expert 0');
          const below = r.slice(i + 1, i + 5).map((x) => x.label);
          return ['q_proj', 'k_proj', 'v_proj', 'o_proj'].every((t) => below.some((l) => l.startsWith(t)))
            ? r
            : undefined;
        },
        30_000,
      );
      const expert = rows.find((r) => r.label === 'expert 0');
      if (!expert || !/[\d.]+[KMB]? params/.test(expert.description))
        throw new Error(`expert 0 row: ${JSON.stringify(expert)}`);
      await s.screenshot(page, 'checkpoints-bam-attention-experts');
    });

    await s.step('Lineage view shows seed → branch → upcycle → MoE', page, async () => {
      await page.keyboard.press('Escape');
      await collapsePane(page, 'Runs');
      await collapsePane(page, 'Checkpoints');
      await expandPane(page, 'Lineage');
      // What run.json says: the seed has no parents, a branch continues it, the BTX upcycle mixes
      // it with the branches, the MoE trains the upcycle's output.
      const parentsOf = (id) =>
        JSON.parse(fs.readFileSync(path.join(runsDir, id, 'run.json'), 'utf8')).parents;
      const btxParents = parentsOf('demo-upcycle-btx');
      if (parentsOf('demo-seed').length !== 0 || parentsOf('demo-moe-btx')[0] !== 'demo-upcycle-btx')
        throw new Error('the demo wrote other parents than this test expects');
      const rows = await until(
        'demo-seed → demo-branch-code, demo-upcycle-btx → demo-moe-btx in the Lineage view',
        async () => {
          const r = await treeRowsWithLevel(page, 'Lineage');
          const at = (label) => r.findIndex((x) => x.label === label);
          const [seed, branch, up, moe] = [
            'demo-seed',
            'demo-branch-code',
            'demo-upcycle-btx',
            'demo-moe-btx',
          ].map(at);
          return seed >= 0 &&
            branch > seed &&
            up > seed &&
            moe === up + 1 &&
            r[seed].level === 1 &&
            r[branch].level === 2 &&
            r[up].level === 2 &&
            r[moe].level === 3
            ? r
            : undefined;
        },
        60_000,
      );
      const up = rows.find((x) => x.label === 'demo-upcycle-btx');
      const others = btxParents.filter((p) => p !== 'demo-seed');
      if (!up.description.startsWith('upcycle · btx') || !others.every((p) => up.description.includes(p)))
        throw new Error(`demo-upcycle-btx row says "${up.description}", parents ${btxParents.join(', ')}`);
      // Every run once (22 rows: the pane has room for them all with Runs and Checkpoints folded).
      const shown = rows.map((x) => x.label).filter((l) => l.startsWith('demo-'));
      if (JSON.stringify([...shown].sort()) !== JSON.stringify(runDirs(runsDir)))
        throw new Error(`Lineage rows ${shown.join(', ')} vs runs ${runDirs(runsDir).join(', ')}`);
      await hidePanel(page);
      await clearNotifications(page);
      await s.screenshot(page, 'lineage');
    });

    await s.step(
      'Checkpoints view lists the upcycled checkpoints with method and parents',
      page,
      async () => {
        await collapsePane(page, 'Lineage');
        await expandPane(page, 'Checkpoints');
        // Fold the BAM checkpoint opened above, so that the upcycle runs (listed last) are in sight.
        const pane = page.locator('.pane', { has: page.locator('.pane-header', { hasText: 'Checkpoints' }) });
        const bam = pane
          .locator('.monaco-list-row[aria-expanded="true"]', {
            has: page.locator('.label-name', { hasText: /^demo-moe-bam-ekv$/ }),
          })
          .first();
        if (await bam.count()) await bam.locator('.monaco-tl-twistie').click();
        const run = JSON.parse(fs.readFileSync(path.join(runsDir, 'demo-upcycle-btx', 'run.json'), 'utf8'));
        if (!fs.existsSync(path.join(runsDir, 'demo-upcycle-btx', 'checkpoint', 'config.json')))
          throw new Error('runs/demo-upcycle-btx/checkpoint is not on disk');
        await expandRow(page, 'Checkpoints', 'demo-upcycle-btx');
        const want = `upcycled · ${run.method} · from ${run.parents.join(', ')}`;
        const row = await until(
          `the row "checkpoint — ${want}" under demo-upcycle-btx`,
          async () => {
            const r = await treeRowsWithLevel(page, 'Checkpoints');
            const i = r.findIndex((x) => x.label === 'demo-upcycle-btx');
            return i >= 0 && r[i + 1]?.label === 'checkpoint' && r[i + 1].description === want
              ? r[i + 1]
              : undefined;
          },
          30_000,
        );
        log(`checkpoints: ${row.label} — ${row.description}`);
        await s.screenshot(page, 'checkpoints-upcycled');
      },
    );

    await s.step('Inspect Routing of Selection decorates the selection', page, async () => {
      // Open sample.py (quick open) and select it all.
      await page.keyboard.press('Escape');
      await page.keyboard.press('F1');
      await page.locator('.quick-input-widget input').fill('sample.py');
      await page.locator('.quick-input-list .monaco-list-row', { hasText: 'sample.py' }).first().waitFor();
      await page.keyboard.press('Enter');
      const editor = page.locator('.editor-instance .monaco-editor').first();
      await editor.locator('.view-lines', { hasText: 'gcd' }).waitFor();
      await editor.locator('.view-lines').click();
      await page.keyboard.press('Control+A');
      await runCommand(page, 'MoE Lab: Inspect Routing of the Selection');
      // Which model: the BAM run's checkpoint (no ONNX export yet, so the extension offers to export it).
      const input = page.locator('.quick-input-widget input');
      await input.waitFor();
      await page.locator('.quick-input-list .monaco-list-row').first().waitFor();
      await input.fill('demo-moe-bam-ekv');
      const item = page
        .locator('.quick-input-list .monaco-list-row', { hasText: 'runs/demo-moe-bam-ekv/checkpoints/' })
        .first();
      await item.waitFor();
      await item.click();
      const dialog = page.locator('.monaco-dialog-box');
      await dialog.waitFor();
      const offer = (await dialog.textContent()) ?? '';
      if (!/has no ONNX export/.test(offer) || !offer.includes('demo-moe-bam-ekv'))
        throw new Error(`unexpected dialog: ${offer}`);
      await s.screenshot(page, 'inspect-export-offer');
      await dialog.locator('.monaco-button', { hasText: /^Export$/ }).click();
      // The export runs as a task; then the selection gets one decoration per token run.
      await until(
        'routing decorations',
        async () => {
          const errors = await errorToasts(page);
          if (errors) throw Object.assign(new Error(`error shown: ${errors}`), { fatal: true });
          return (await editor.locator('[class*="ced-"]').count()) > 0;
        },
        240_000,
        250,
      ).catch(async (e) => {
        throw new Error(`${e.message}${(await errorToasts(page)) ? ` — ${await errorToasts(page)}` : ''}`);
      });
      await hidePanel(page);
      const status = page.locator('.statusbar-item', { has: page.locator('.codicon-symbol-color') }).first();
      await status.waitFor();
      const statusText = (await status.textContent())?.trim() ?? '';
      if (!/Layer \d+/.test(statusText)) throw new Error(`routing status bar item says "${statusText}"`);
      // Drop the selection (the colours stay) and let the progress toast go.
      await page.keyboard.press('Escape');
      await page.keyboard.press('Control+Home');
      await until(
        'the progress toast to go',
        async () => !(await page.locator('.notification-toast', { hasText: 'routing' }).isVisible()),
        15_000,
      ).catch(() => {});
      const decorated = await editor.locator('[class*="ced-"]').count();
      if (decorated < 10) throw new Error(`only ${decorated} decorated token runs`);
      await s.screenshot(page, 'inspect-decorations');
      // The hover over a token lists its experts for every router.
      const word = editor.locator('.view-line span', { hasText: /^gcd$/ }).first();
      const box = await word.boundingBox();
      if (!box) throw new Error('no box for "gcd"');
      const hover = page.locator('.monaco-hover', { hasText: /token \d+ of \d+/ }).first();
      await until(
        'the routing hover',
        async () => {
          await page.mouse.move(box.x + 2, box.y + box.height / 2);
          await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
          return hover.isVisible();
        },
        20_000,
        700,
      );
      const hoverText = (await hover.textContent()) ?? '';
      if (!/E\d/.test(hoverText)) throw new Error(`hover without experts: ${hoverText.slice(0, 300)}`);
      await s.screenshot(page, 'inspect-hover');
    });
  } finally {
    if (wb.consoleErrors.length)
      fs.writeFileSync(path.join(s.dir, 'console-errors.txt'), wb.consoleErrors.join('\n') + '\n');
    await wb.close();
  }
}

// ---- 4. a fresh machine: the chosen python3 has no engine; Run Demo sets up an environment -----------
async function freshMachine() {
  const s = scenario('fresh-machine');
  const ws = path.join(scratch, 'fresh', 'no engine');
  fs.mkdirSync(ws, { recursive: true });
  // A Python without moelab: a venv-less interpreter that cannot import it (on Debian, externally managed).
  const bare = ['/usr/bin/python3', '/usr/local/bin/python3'].find(
    (p) => fs.existsSync(p) && spawnSync(p, ['-c', 'import moelab']).status !== 0,
  );
  if (!bare) throw new Error('no python3 without moelab found for the fresh-machine test');
  const pep668 =
    spawnSync(bare, [
      '-c',
      'import os, sys, sysconfig; sys.exit(0 if os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)',
    ]).status === 0;
  const gpu = fs.existsSync('/proc/driver/nvidia/version') || !spawnSync('nvidia-smi', ['-L']).error;
  writeWorkspace(
    ws,
    { 'moelab.pythonPath': bare, 'moelab.device': 'cpu' },
    { 'README.txt': 'no engine here\n' },
  );
  const dir = path.join(scratch, 'fresh');
  const wb = await startWorkbench({ prefix, vsix, dir, outDir: s.dir, trust: false, log });
  const { page } = wb;
  const offer = page.locator('.notification-toast', { hasText: 'The MoE Lab engine is not installed in' });
  const settle = async (toast) => {
    // Let the toast finish sliding in before the screenshot.
    await until(
      'the toast to settle',
      async () => (await toast.evaluate((e) => getComputedStyle(e).opacity)) === '1',
      5000,
    ).catch(() => {});
    await sleep(300);
  };
  try {
    await s.step('workbench opens the workspace', page, async () => {
      await openFolder(page, wb.baseUrl, ws, 'README.txt');
    });
    await s.step('Run Demo offers a dedicated environment; Cancel starts nothing', page, async () => {
      await runCommand(page, 'MoE Lab: Run Demo');
      await offer.waitFor({ timeout: 60_000 });
      const text = (await offer.textContent()) ?? '';
      if (!text.includes(bare)) throw new Error(`the offer does not name ${bare}: ${text}`);
      if (!/Create a dedicated environment in MoE Lab's storage/.test(text))
        throw new Error(`the offer does not propose an environment: ${text}`);
      await offer.locator('.monaco-button', { hasText: /^Create Environment$/ }).waitFor();
      const installHere = await offer.locator('.monaco-button', { hasText: /^Install into/ }).count();
      if (pep668 && (installHere || !/externally managed \(PEP 668\)/.test(text)))
        throw new Error(`${bare} is externally managed, yet the offer is: ${text}`);
      await settle(offer);
      await s.screenshot(page, 'environment-offer');
      await offer.locator('.monaco-button', { hasText: /^Cancel$/ }).click();
      await sleep(1500);
      if (fs.existsSync(path.join(ws, 'runs')))
        throw new Error('a runs folder appeared although the engine is missing');
      if (await page.locator('.terminal-wrapper').count()) throw new Error('a terminal opened after Cancel');
    });
    let envPython;
    await s.step('Create Environment installs torch and the engine, then the demo starts', page, async () => {
      await runCommand(page, 'MoE Lab: Run Demo');
      await offer.waitFor({ timeout: 60_000 });
      await offer.locator('.monaco-button', { hasText: /^Create Environment$/ }).click();
      // The progress notification names the torch build and why (no GPU here: the CPU build).
      const want = gpu
        ? /installing torch \(CUDA build of torch: /
        : /installing torch \(CPU build of torch: no /;
      const progress = page.locator('.notification-toast', { hasText: 'MoE Lab: setting up Python' });
      await until(
        'the torch step in the progress notification',
        async () => want.test((await progress.textContent().catch(() => '')) ?? ''),
        120_000,
        100,
      );
      await settle(progress);
      await s.screenshot(page, 'environment-progress');
      const tInstall = Date.now();
      await until(
        'the demo to start in the new environment',
        async () => {
          const errors = await errorToasts(page);
          if (errors) throw Object.assign(new Error(`error shown: ${errors}`), { fatal: true });
          return /\[demo-[\w-]+\] step \d+\/\d+/.test(
            (await page.locator('.terminal-wrapper .xterm-rows').allTextContents()).join('\n'),
          );
        },
        900_000,
        500,
      );
      log(`environment set up and demo started in ${((Date.now() - tInstall) / 1000).toFixed(0)} s`);
      // Selected for MoE Lab where the old value was set (the workspace), an environment in global storage.
      envPython = JSON.parse(fs.readFileSync(path.join(ws, '.vscode', 'settings.json'), 'utf8'))[
        'moelab.pythonPath'
      ];
      const storage = path.join(dir, 'user-data', 'User', 'globalStorage', `${pkg.publisher}.${pkg.name}`);
      if (!envPython || !envPython.startsWith(storage + path.sep))
        throw new Error(`moelab.pythonPath is ${envPython}, not under ${storage}`);
      const torch = spawnSync(envPython, ['-c', 'import torch, moelab; print(torch.__version__)'], {
        encoding: 'utf8',
      });
      if (torch.status !== 0) throw new Error(`the new environment lacks torch or moelab: ${torch.stderr}`);
      if (!gpu && !/\+cpu$/.test(torch.stdout.trim()))
        throw new Error(`not the CPU build of torch: ${torch.stdout}`);
      if (spawnSync(bare, ['-c', 'import moelab']).status === 0)
        throw new Error(`moelab was installed into ${bare}`);
    });
    await s.step('the dashboard draws the first loss curve', page, async () => {
      const runsDir = path.join(ws, 'runs');
      await until(
        'a run that logged a train loss',
        async () =>
          runDirs(runsDir).some((id) => {
            const f = path.join(runsDir, id, 'metrics.jsonl');
            return fs.existsSync(f) && /"split":\s*"train"/.test(fs.readFileSync(f, 'utf8'));
          }),
        300_000,
        500,
      );
      await runCommand(page, 'MoE Lab: Open Dashboard');
      const frame = await webviewFrame(page, 'figure[data-metric="train/loss"]');
      const loss = frame.locator('figure[data-metric="train/loss"]');
      await until(
        'a train/loss curve',
        async () => JSON.parse((await loss.getAttribute('data-series')) ?? '[]').length > 0,
        60_000,
      );
      await until(
        'ink on the loss chart',
        async () => (await canvasInk(frame, 'figure[data-metric="train/loss"] canvas')) > 500,
        30_000,
      );
      await hidePanel(page);
      await clearNotifications(page);
      await s.screenshot(page, 'first-curve');
      // Let the demo end, so that nothing of it outlives the server.
      await until(
        'the demo to end',
        async () => runDirs(runsDir).length > 0 && fs.existsSync(path.join(runsDir, 'study.json')),
        600_000,
        1000,
      );
    });
  } finally {
    if (wb.consoleErrors.length)
      fs.writeFileSync(path.join(s.dir, 'console-errors.txt'), wb.consoleErrors.join('\n') + '\n');
    await wb.close();
  }
}

// ---- 5. Restricted Mode: runs shown, nothing launches ---------------------------------------------
async function restricted() {
  const s = scenario('restricted');
  const ws = path.join(scratch, 'restricted', 'untrusted workspace');
  fs.mkdirSync(ws, { recursive: true });
  // A runs folder to look at: the walk's, if it ran, else one run made here.
  const runs = path.join(ws, 'runs');
  if (fs.existsSync(path.join(walkWorkspace, 'runs')))
    fs.cpSync(path.join(walkWorkspace, 'runs'), runs, { recursive: true });
  else {
    fs.mkdirSync(path.join(runs, 'r1'), { recursive: true });
    fs.writeFileSync(
      path.join(runs, 'r1', 'run.json'),
      JSON.stringify({ id: 'r1', stage: 'dense', status: 'done' }),
    );
    fs.writeFileSync(
      path.join(runs, 'r1', 'metrics.jsonl'),
      '{"step":1,"split":"train","loss":3.2}\n{"step":2,"split":"train","loss":3.0}\n',
    );
  }
  const before = runDirs(runs);
  // The workspace asks for the repository's engine: in Restricted Mode that setting is ignored anyway.
  writeWorkspace(ws, { 'moelab.pythonPath': venvPython }, { 'README.txt': 'untrusted\n' });
  const wb = await startWorkbench({
    prefix,
    vsix,
    dir: path.join(scratch, 'restricted'),
    outDir: s.dir,
    trust: true,
    settings: {
      'security.workspace.trust.startupPrompt': 'never',
      'security.workspace.trust.banner': 'always',
    },
    log,
  });
  const { page } = wb;
  try {
    await s.step('workbench opens the workspace in Restricted Mode', page, async () => {
      await openFolder(page, wb.baseUrl, ws, 'README.txt');
      await page.locator('.statusbar-item', { hasText: 'Restricted Mode' }).first().waitFor();
    });
    await s.step('Runs view shows the runs in Restricted Mode', page, async () => {
      await page
        .locator(
          '.activitybar .action-item a[aria-label^="MoE Lab"], .activitybar .action-item[aria-label^="MoE Lab"]',
        )
        .first()
        .click();
      await expandPane(page, 'Runs');
      await until(
        `${before.length} runs counted`,
        async () => (await treeRows(page, 'Runs')).some((r) => r.description === `${before.length} done`),
        60_000,
      );
      await s.screenshot(page, 'runs-view-restricted');
    });
    await s.step('Run Demo cannot launch a job', page, async () => {
      const titles = await paletteTitles(page, '>MoE Lab: Run Demo');
      if (titles.includes('MoE Lab: Run Demo')) {
        // Shown: then running it must not start anything.
        await runCommand(page, 'MoE Lab: Run Demo');
      }
      await openPalette(page, '>MoE Lab:');
      await sleep(800);
      const launchers = (
        await page.locator('.quick-input-list .monaco-list-row .label-name').allTextContents()
      ).map((t) => t.trim());
      await s.screenshot(page, 'palette-restricted');
      await page.keyboard.press('Escape');
      await sleep(2000);
      if (runDirs(runs).length !== before.length) throw new Error('a run was added in Restricted Mode');
      if (await page.locator('.terminal-wrapper').count())
        throw new Error('a terminal opened in Restricted Mode');
      // Asked one by one (the palette's list is virtualised: a long list may not render every row).
      for (const t of [
        'MoE Lab: Run Demo',
        'MoE Lab: Run Experiment',
        'MoE Lab: Upcycle Checkpoints',
        'MoE Lab: Install Engine',
        'MoE Lab: New Experiment',
      ]) {
        if (launchers.includes(t) || (await paletteTitles(page, `>${t}`)).includes(t))
          throw new Error(`"${t}" is offered in Restricted Mode`);
      }
      if (runDirs(runs).length !== before.length) throw new Error('a run was added in Restricted Mode');
      if (!launchers.includes('MoE Lab: Open Dashboard'))
        throw new Error(`viewing commands are missing: ${launchers.join(', ')}`);
    });
  } finally {
    if (wb.consoleErrors.length)
      fs.writeFileSync(path.join(s.dir, 'console-errors.txt'), wb.consoleErrors.join('\n') + '\n');
    await wb.close();
  }
}

// ---- run ---------------------------------------------------------------------------------------------
let crashed;
try {
  for (const [name, fn] of [
    ['walk', walk],
    ['fresh', freshMachine],
    ['restricted', restricted],
  ]) {
    if (only && !only.has(name)) continue;
    try {
      await fn();
    } catch (e) {
      results.push({ scenario: name, step: 'setup', status: 'failed', error: String(e?.stack ?? e) });
      log(`✗ ${name}: ${e?.stack ?? e}`);
    }
  }
} catch (e) {
  crashed = e;
} finally {
  if (!process.env.E2E_KEEP) fs.rmSync(scratch, { recursive: true, force: true });
}
const passed = results.filter((r) => r.status === 'passed').length;
const failed = results.filter((r) => r.status === 'failed').length;
const skipped = results.filter((r) => r.status === 'skipped').length;
const totalMs = Date.now() - t0;
fs.writeFileSync(
  path.join(outDir, 'results.json'),
  JSON.stringify({ passed, failed, skipped, totalMs, results }, null, 2) + '\n',
);
console.log(
  `[e2e] ${passed} passed, ${failed} failed, ${skipped} skipped in ${(totalMs / 1000).toFixed(1)} s; screenshots in ${path.relative(root, outDir)}/`,
);
if (crashed) console.error(crashed);
if (process.env.E2E_DOCS_SCREENSHOTS === '1' && !failed && !crashed) refreshDocScreenshots();
process.exit(failed || crashed || passed === 0 ? 1 : 0);

/** The README's screenshots are the walk's: copied from a walk that passed (E2E_DOCS_SCREENSHOTS=1). */
function refreshDocScreenshots() {
  const docs = path.join(root, 'docs', 'screenshots');
  const walk = path.join(outDir, 'walk');
  const shots = fs.existsSync(walk) ? fs.readdirSync(walk) : [];
  for (const [doc, label] of Object.entries(DOC_SCREENSHOTS)) {
    const shot = shots.find((f) => f.replace(/^\d+-/, '') === `${label}.png`);
    if (!shot) {
      console.error(`[e2e] no walk screenshot '${label}' for docs/screenshots/${doc}`);
      continue;
    }
    fs.copyFileSync(path.join(walk, shot), path.join(docs, doc));
    console.log(`[e2e] docs/screenshots/${doc} <- ${path.relative(root, path.join(walk, shot))}`);
  }
}
