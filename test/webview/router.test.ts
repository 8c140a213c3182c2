// The router panel bundle in headless Chromium.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { routingRows, RUNS, saturationPoints, steps } from './fixtures';
import { launch, openPanel, settled } from './harness';

let browser: Browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const demoRows = (perToken: boolean) => ({
  'bam-ekv-s1': routingRows({
    layers: 4,
    experts: 4,
    steps: steps(1000, 50),
    routers: ['ffn', 'attn'],
    seed: 1,
    perToken,
  }),
  'btx-s1': routingRows({
    layers: 4,
    experts: 8,
    steps: steps(1000, 50),
    routers: ['ffn'],
    collapseTo: 2,
    dead: 3,
    seed: 2,
    perToken,
  }),
});

/** As the host sends a run directory: with perToken, rows carry coact and done runs add saturation records. */
const demo = (perToken = false): unknown => ({
  type: 'init',
  panel: 'router',
  runIds: ['bam-ekv-s1', 'btx-s1'],
  runs: RUNS,
  routing: Object.entries(demoRows(perToken)).map(([runId, rows]) =>
    perToken ? { runId, rows, saturation: saturationPoints(rows) } : { runId, rows },
  ),
});

const lastPathPoints = (p: { page: import('playwright-core').Page }, card: number): Promise<number> =>
  p.page
    .locator('[data-card="saturation"] svg')
    .nth(card)
    .evaluate(
      (svg) => (svg.querySelector('path.line')?.getAttribute('d') ?? '').split(/[ML]/).filter(Boolean).length,
    );

describe('router panel webview', () => {
  it("labels the heatmaps' axes (layers, experts, steps, domains) and reads the cell under the pointer", async () => {
    const p = await openPanel(browser, 'router', { height: 1400 });
    await p.send(demo());
    await settled(p.page);
    const overview = p.page.locator('.overview-run').first().locator('.heat-axes');
    assert.equal(await overview.getAttribute('data-y-label'), 'layer');
    assert.equal(await overview.getAttribute('data-x-label'), 'expert');
    // bam-ekv-s1: 4 FFN then 4 attention routers × 4 experts; every expert is a tick.
    assert.deepEqual(await overview.locator('.heat-xticks .heat-tick').allTextContents(), [
      '0',
      '1',
      '2',
      '3',
    ]);
    assert.deepEqual(await overview.locator('.heat-yticks .heat-tick').allTextContents(), [
      'L0',
      'L1',
      'L2',
      'L3',
      'L0 attn',
      'L1 attn',
      'L2 attn',
      'L3 attn',
    ]);
    const axes = await p.page
      .locator('.layer-row')
      .first()
      .locator('.heat-axes')
      .evaluateAll((els) =>
        els.map((e) => `${(e as HTMLElement).dataset.yLabel}×${(e as HTMLElement).dataset.xLabel}`),
      );
    assert.ok(axes.includes('expert×step') && axes.includes('domain×expert'), axes.join(', '));
    // The top-right cell of the overview: layer 0's FFN router, expert 3.
    const heat = overview.locator('canvas.heat');
    const box = await heat.boundingBox();
    assert.ok(box);
    await p.page.mouse.move(box.x + box.width * 0.95, box.y + box.height * 0.03);
    const readout = p.page.locator('.overview-run').first().locator('.heat-readout');
    assert.match((await readout.textContent()) ?? '', /^L0 · expert 3 · utilization [\d.]+/);
    assert.equal(await heat.getAttribute('title'), await readout.textContent());
    // Ticks sit inside their axis, not over the matrix.
    const ticks = await overview.locator('.heat-yticks').boundingBox();
    assert.ok(ticks && ticks.x + ticks.width <= box.x + 1);
    await p.screenshot('router-axes');
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  for (const theme of ['dark', 'light', 'hc'] as const) {
    it(`shows two runs side by side with heatmaps and warnings (${theme})`, async () => {
      const p = await openPanel(browser, 'router', { theme, height: 1400 });
      await p.send(demo());
      await settled(p.page);
      assert.equal(await p.page.locator('.overview-run').count(), 2);
      assert.ok((await p.page.locator('.layer-row.two').count()) >= 4);
      const warnings = (await p.page.locator('.warning').allTextContents()).join('\n');
      assert.match(warnings, /collapse/i);
      assert.match(warnings, /dead expert/i);
      // The layer counts use the warnings' rule (routingStats.ts), told on hover: only the broken run has a dead expert.
      const counts = await p.page
        .locator('.layer-stats span')
        .evaluateAll((els) => els.map((e) => [e.textContent ?? '', e.getAttribute('title') ?? '']));
      assert.ok(counts.length >= 4);
      assert.ok(counts.some(([text]) => text === '1 dead'));
      assert.ok(
        counts.every(([text]) => text === '0 dead' || text === '1 dead'),
        JSON.stringify(counts),
      );
      for (const [, title] of counts)
        assert.match(title, /under 5% of its fair share .* last 3 logged steps/);
      const posted = (
        (await p.posted()) as { type: string; warnings?: { runId: string; kind: string }[] }[]
      ).filter((m) => m.type === 'routerWarnings');
      assert.ok(
        posted.flatMap((m) => m.warnings ?? []).every((w) => w.runId === 'btx-s1'),
        'only the broken run warns',
      );
      // No saturation records (the run is not done): an explanatory empty state instead.
      assert.match(
        (await p.page.locator('[data-card="saturation"]').first().textContent()) ?? '',
        /when training finishes/,
      );
      // The attention router shows the soft-weight distribution.
      assert.ok((await p.page.getByText('Soft router weight per expert').count()) > 0);
      await p.screenshot(`router-${theme}`);
      assert.deepEqual(await p.cspViolations(), []);
      assert.deepEqual(p.errors, []);
      await p.page.close();
    });
  }

  it('plots saturation and co-activation when records carry them', async () => {
    const p = await openPanel(browser, 'router', { height: 1400 });
    await p.send(demo(true));
    await settled(p.page);
    assert.equal(await p.page.locator('[data-card="saturation"] svg').count(), 2);
    assert.equal(await lastPathPoints(p, 0), 21, 'one saturation point per logged step');
    // FFN rows: a P(b | a) heatmap at the chosen step (latest); the soft attention router says why it has none.
    const shown = p.page.locator('[data-coact="shown"]');
    assert.ok((await shown.count()) >= 4);
    assert.match((await shown.first().textContent()) ?? '', /P\(b \| a\), step 1000/);
    assert.deepEqual(
      await shown
        .first()
        .locator('canvas.coact')
        .evaluate((c) => [(c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height]),
      [4, 4],
    );
    assert.match(
      (await p.page.locator('[data-coact="absent"]').first().textContent()) ?? '',
      /soft router uses every expert/,
    );
    // The step slider moves the matrix to an earlier step.
    await p.page
      .locator('input[type="range"]')
      .first()
      .evaluate((i) => {
        (i as HTMLInputElement).value = '4';
        i.dispatchEvent(new Event('input'));
      });
    await settled(p.page);
    assert.match((await shown.first().textContent()) ?? '', /step 200/);
    // Hovering reads P(b | a) out.
    const box = await shown.first().locator('canvas.coact').boundingBox();
    assert.ok(box);
    await p.page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.1);
    assert.match((await shown.first().locator('.hover-readout').textContent()) ?? '', /^P\(3 \| 0\) = /);
    await p.screenshot('router-coact-saturation');
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('merges saturation that arrives after the rows, and ignores steps it does not have', async () => {
    const p = await openPanel(browser, 'router');
    const rows = demoRows(false)['bam-ekv-s1'];
    await p.send({
      type: 'init',
      panel: 'router',
      runIds: [],
      runs: RUNS,
      routing: [{ runId: 'bam-ekv-s1', rows }],
    });
    await settled(p.page);
    assert.equal(await p.page.locator('[data-card="saturation"] svg').count(), 0);
    const late = [
      ...saturationPoints(rows),
      { step: 12345, layer: 0, router: 'ffn', saturation: 0.5 },
      { step: 50, layer: 99, router: 'ffn', saturation: 0.5 },
    ];
    await p.send({ type: 'appendRouting', routing: [{ runId: 'bam-ekv-s1', rows: [], saturation: late }] });
    await settled(p.page);
    assert.equal(await p.page.locator('[data-card="saturation"] svg').count(), 1);
    assert.equal(await lastPathPoints(p, 0), 21);
    // Rows are unchanged: still 21 logged steps, none added for the unknown step.
    assert.match((await p.page.locator('.hover-readout').first().textContent()) ?? '', /^21 logged steps/);
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('keeps 40 layers × 256 experts usable (virtualized rows)', async () => {
    const p = await openPanel(browser, 'router', { height: 1000 });
    const rows = routingRows({
      layers: 40,
      experts: 256,
      steps: steps(1000, 50),
      routers: ['ffn', 'attn'],
      seed: 3,
    });
    const t0 = Date.now();
    await p.send({
      type: 'init',
      panel: 'router',
      runIds: [],
      runs: RUNS,
      routing: [{ runId: 'bam-ekv-s1', rows }],
    });
    await settled(p.page);
    const ms = Date.now() - t0;
    const rendered = await p.page.locator('.layer-row').count();
    assert.ok(rendered > 0 && rendered < 16, `only rows in view exist (${rendered})`);
    await p.page.locator('.layer-list').evaluate((e) => e.scrollTo(0, e.scrollHeight));
    await settled(p.page);
    const keys = await p.page
      .locator('.layer-row')
      .evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.key));
    assert.ok(keys.includes('1:00039'), `last attention layer rendered after scrolling: ${keys.join(',')}`);
    assert.match(
      (await p.page.locator('[data-coact="absent"]').first().textContent()) ?? '',
      /at most 64 experts \(this router has 256\)/,
    );
    console.log(
      `# 40 layers x 256 experts x 2 routers x 21 steps: init to paint ${ms} ms, ${rendered} rows in the DOM`,
    );
    await p.page.evaluate(() => window.scrollTo(0, 0));
    await p.screenshot('router-40x256');
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('drops malformed messages and appends live routing', async () => {
    const p = await openPanel(browser, 'router');
    const bad = [
      {
        type: 'init',
        panel: 'router',
        runIds: [],
        runs: RUNS,
        routing: [{ runId: 'x', rows: [{ step: 1, layer: 0, router: 'moe', load: [1], prob: [1] }] }],
      },
      {
        type: 'appendRouting',
        routing: [{ runId: 'x', rows: [{ step: 1, layer: 0.5, router: 'ffn', load: [1], prob: [1] }] }],
      },
      {
        type: 'appendRouting',
        routing: [{ runId: 'x', rows: [{ step: 1, layer: 0, router: 'ffn', load: [0.5, 0.5], prob: [1] }] }],
      },
      {
        type: 'appendRouting',
        routing: [
          {
            runId: 'x',
            rows: [
              {
                step: 1,
                layer: 0,
                router: 'ffn',
                load: [0.5, 0.5],
                prob: [0.5, 0.5],
                by_domain: { code: [1] },
              },
            ],
          },
        ],
      },
      {
        type: 'appendRouting',
        routing: [
          {
            runId: 'x',
            rows: [
              { step: 1, layer: 0, router: 'ffn', load: [0.5, 0.5], prob: [0.5, 0.5], coact: [[1, 0.5]] },
            ],
          },
        ],
      },
      {
        type: 'appendRouting',
        routing: [
          { runId: 'x', rows: [], saturation: [{ step: 1, layer: 0, router: 'ffn', saturation: 1.5 }] },
        ],
      },
      { type: 'init', panel: 'dashboard', runIds: [], runs: [], blocks: [] },
      undefined,
    ];
    for (const m of bad) await p.send(m);
    await p.send(demo());
    await settled(p.page);
    assert.equal(await p.page.evaluate(() => document.body.dataset.droppedMessages), String(bad.length));
    const more = routingRows({
      layers: 4,
      experts: 4,
      steps: [1050, 1100],
      routers: ['ffn', 'attn'],
      seed: 1,
    });
    await p.send({ type: 'appendRouting', routing: [{ runId: 'bam-ekv-s1', rows: more }] });
    await settled(p.page);
    assert.match((await p.page.locator('.hover-readout').first().textContent()) ?? '', /^23 logged steps/);
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });
});
