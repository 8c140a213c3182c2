// The Results bundle in headless Chromium: the table, verdicts, colours and the copy buttons,
// fed with what the host reads from the demo's real study.json / eval.json.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { parseResults } from '../../extension/src/results/resultsFile';
import type { ResultsDoc } from '../../webview/src/protocol';
import { bestPerColumn, fmtSpread, toLatex, toMarkdown } from '../../webview/src/results/resultsTable';
import { syntheticEvalJson } from '../unit/resultsSynthetic';
import { launch, openPanel, settled, type PanelPage } from './harness';

const FIXTURES = path.resolve(import.meta.dirname, '..', 'fixtures', 'results');
const load = (name: string): ResultsDoc =>
  parseResults(fs.readFileSync(path.join(FIXTURES, name), 'utf8'), name);

let browser: Browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const message = (doc: ResultsDoc, file = '/w/runs/study.json') => ({
  type: 'results',
  file,
  label: path.basename(file),
  doc,
  error: null,
});

describe('results webview', () => {
  let p: PanelPage;
  const doc = load('study.json');
  const s = doc.settings[0];

  it('shows the method × domain table grouped by role with the best per column marked', async () => {
    p = await openPanel(browser, 'results');
    await p.send(message(doc));
    await settled(p.page);
    const rows = await p.page
      .locator('table.results-table tbody tr[data-label]')
      .evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.label));
    assert.equal(rows.length, s.models.length);
    const groups = await p.page.locator('table.results-table tr.group-row').allTextContents();
    assert.deepEqual(groups, ['Seed', 'Dense runs', 'Baselines', 'Methods', 'Variants']);
    const best = bestPerColumn(s.models, [...doc.domains, 'average']);
    const marked = await p.page.locator('table.results-table td.best').count();
    assert.equal(
      marked,
      [...best.values()].reduce((n, b) => n + b.size, 0),
    );
    const avgBest = [...(best.get('average') ?? [])][0];
    const cell = await p.page.locator(`tr[data-label="${avgBest}"] td`).last().textContent();
    assert.ok(
      cell?.startsWith(fmtSpread(s.models.find((m) => m.label === avgBest)?.ppl.average)),
      `best average cell: ${cell}`,
    );
    await p.screenshot('results-dark');
    assert.deepEqual(await p.cspViolations(), []);
    assert.deepEqual(p.errors, []);
  });

  it('renders every verdict with its margins beside the paper', async () => {
    const claims = await p.page
      .locator('.claim')
      .evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.verdict));
    assert.deepEqual(
      claims,
      s.claims.map((c) => c.verdict),
    );
    const notHold = p.page.locator('.claim.verdict-not').first();
    assert.match((await notHold.locator('.verdict').textContent()) ?? '', /✗ does not hold/);
    const bam = s.claims.find((c) => c.claim === 'BAM below BTX at equal tokens');
    const text = await p.page.locator('.claim', { hasText: 'BAM below BTX at equal tokens' }).textContent();
    assert.ok(
      bam &&
        text?.includes(`ours +${bam.comparisons[0].marginPct.toFixed(2)} %`) &&
        text.includes(`paper +${bam.comparisons[0].paperMarginPct?.toFixed(2)} %`),
      text ?? '',
    );
    // The other two verdicts, from a multi-seed study whose claims came out so.
    const seeds = structuredClone(doc);
    seeds.settings[0].claims[0].verdict = 'holds on the mean only';
    seeds.settings[0].claims[1] = {
      ...seeds.settings[0].claims[1],
      verdict: 'not measured',
      missing: ['sparse'],
      comparisons: [],
    };
    await p.send(message(seeds));
    await settled(p.page);
    assert.match(
      (await p.page.locator('.claim.verdict-mean .verdict').textContent()) ?? '',
      /≈ holds on the mean only/,
    );
    assert.match(
      (await p.page.locator('.claim.verdict-unmeasured').textContent()) ?? '',
      /not measured[\s\S]*not run: sparse/,
    );
  });

  it('draws a bar per model and domain in its colour, with error bars over seeds', async () => {
    await p.send(message(doc));
    await settled(p.page);
    assert.equal(await p.page.locator('figure.results-bar').count(), doc.domains.length + 1);
    // The charts are drawn as they come near the viewport (below the table, they may not be yet).
    await p.page.locator('figure.results-bar[data-column="average"]').scrollIntoViewIfNeeded();
    await settled(p.page);
    const fills = await p.page
      .locator('figure.results-bar[data-column="average"] rect.bar')
      .evaluateAll((els) => els.map((e) => [e.getAttribute('data-label'), e.getAttribute('fill')]));
    assert.deepEqual(
      fills,
      s.models.map((m) => [m.label, m.color]),
    );
    assert.equal(await p.page.locator('.error-bar').count(), 0, 'one seed: no error bars');
    const seeds = structuredClone(doc);
    seeds.settings[0].models[0].ppl.code = { mean: 11.8, std: 0.3, values: [11.5, 11.8, 12.1] };
    await p.send(message(seeds));
    await settled(p.page);
    assert.equal(await p.page.locator('figure.results-bar[data-column="code"] .error-bar').count(), 1);
  });

  it('shows the equal-token and equal-compute views side by side', async () => {
    await p.send(message(doc));
    await settled(p.page);
    const views = p.page.locator('.budget-view');
    assert.equal(await views.count(), 2);
    const [a, b] = [await views.nth(0).boundingBox(), await views.nth(1).boundingBox()];
    assert.ok(a && b && Math.abs(a.y - b.y) < 2 && b.x > a.x + a.width - 1, 'side by side');
    const compute = await views
      .nth(1)
      .locator('tbody tr')
      .evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.label));
    const byFlops = s.models
      .filter((m) => m.budget.trainFlops !== undefined)
      .sort((x, y) => (x.budget.trainFlops ?? 0) - (y.budget.trainFlops ?? 0))
      .map((m) => m.label);
    assert.deepEqual(compute, byFlops);
    assert.ok(((await views.nth(1).textContent()) ?? '').includes('training FLOPs of bam-ekv'));
    await views.nth(0).scrollIntoViewIfNeeded();
    await p.screenshot('results-bars-budgets');
  });

  it('Copy LaTeX posts the booktabs table to the host', async () => {
    await p.page.locator('vscode-button', { hasText: 'Copy LaTeX' }).click();
    const posted = (await p.posted()) as { type: string; format?: string; text?: string }[];
    const copy = posted.find((m) => m.type === 'copyText' && m.format === 'latex');
    assert.ok(copy?.text);
    assert.equal(copy.text, toLatex(s, doc.domains));
    assert.match(copy.text, /\\begin\{tabular\}[\s\S]*\\toprule[\s\S]*\\midrule[\s\S]*\\bottomrule/);
    await p.page.locator('vscode-button', { hasText: 'Copy CSV' }).click();
    assert.ok(
      ((await p.posted()) as { type: string; format?: string }[]).some(
        (m) => m.type === 'copyText' && m.format === 'csv',
      ),
    );
  });

  it('shows lm-eval task scores as columns, the highest marked best, and copies them as Markdown', async () => {
    const tasks = load('eval-tasks.json');
    await p.send(message(tasks, '/w/runs/tasks-eval/eval.json'));
    await settled(p.page);
    const heads = await p.page.locator('table.results-table thead th').allTextContents();
    for (const t of tasks.tasks) assert.ok(heads.includes(`${t.name} (acc)`), heads.join(', '));
    const models = tasks.settings[0].models;
    for (const t of tasks.tasks) {
      const top = Math.max(...models.map((m) => m.scores[t.name].mean ?? -1));
      const marked = await p.page
        .locator('table.results-table tbody tr[data-label]')
        .evaluateAll(
          (rows, i) =>
            rows
              .filter((r) => r.querySelectorAll('td')[i]?.classList.contains('best'))
              .map((r) => (r as HTMLElement).dataset.label),
          heads.indexOf(`${t.name} (acc)`) - 1,
        );
      assert.deepEqual(
        marked,
        models.filter((m) => m.scores[t.name].mean === top).map((m) => m.label),
        t.name,
      );
    }
    await p.page.locator('vscode-button', { hasText: 'Copy Markdown' }).click();
    const posted = (await p.posted()) as { type: string; format?: string; text?: string }[];
    const md = posted.filter((m) => m.type === 'copyText' && m.format === 'markdown').at(-1)?.text ?? '';
    assert.equal(md, toMarkdown(tasks.settings[0], tasks.domains, tasks.tasks));
    assert.ok(md.includes(`${tasks.tasks[0].name} (acc)`));
    assert.deepEqual(p.errors, []);
  });

  it('opens on 100 runs with every row drawn (loose bound; bench/results_open.mjs times it)', async () => {
    const big = parseResults(syntheticEvalJson(100), 'eval.json');
    const json = JSON.stringify(message(big, '/w/runs/big/eval.json'));
    const ms = await p.page.evaluate(
      (text) =>
        new Promise<number>((resolve) => {
          const msg = JSON.parse(text);
          const t0 = performance.now();
          window.postMessage(msg, '*');
          // This listener runs after the panel's (registered first), which renders synchronously.
          window.addEventListener(
            'message',
            () => requestAnimationFrame(() => resolve(performance.now() - t0)),
            {
              once: true,
            },
          );
        }),
      json,
    );
    assert.equal(await p.page.locator('table.results-table tbody tr[data-label]').count(), 100);
    assert.ok(ms < 3000, `${ms.toFixed(0)} ms`);
    assert.deepEqual(p.errors, []);
  });

  it('an eval.json shows one seed without claims; a file that cannot be read says why; the file is kept for reload', async () => {
    await p.send(message(load('eval.json'), '/w/runs/demo-eval/eval.json'));
    await settled(p.page);
    assert.equal(await p.page.locator('.claim').count(), 0);
    assert.ok(((await p.page.locator('main').textContent()) ?? '').includes('No claims'));
    assert.deepEqual(await p.state(), { panel: 'results', file: '/w/runs/demo-eval/eval.json', setting: 0 });
    await p.send({
      type: 'results',
      file: '/w/runs/demo-eval/eval.json',
      label: 'eval.json',
      doc: null,
      error: 'eval.json is not valid JSON: Unexpected end',
    });
    await settled(p.page);
    assert.match((await p.page.locator('[role="alert"]').textContent()) ?? '', /not valid JSON/);
    await p.send({ type: 'results', file: 1, doc: null });
    await settled(p.page);
    assert.equal(await p.page.evaluate(() => document.body.dataset.droppedMessages), '1');
    assert.deepEqual(p.errors, []);
  });
});
