// The dashboard bundle in headless Chromium: what protocol messages draw.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { demoBlocks, metricBlocks, RUNS } from './fixtures';
import { launch, openPanel, settled, type PanelPage } from './harness';

let browser: Browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

function init(blocks = demoBlocks()): unknown {
  return { type: 'init', panel: 'dashboard', runIds: [], runs: RUNS, blocks };
}

/** Pixels of the chart's canvas close to a colour (RGB within tolerance). */
async function colouredPixels(page: Page, metric: string, rgb: [number, number, number]): Promise<number> {
  return page.evaluate(
    ({ metric, rgb }) => {
      const canvas = document.querySelector<HTMLCanvasElement>(`figure[data-metric="${metric}"] canvas`);
      const ctx = canvas?.getContext('2d');
      if (!canvas || !ctx) return -1;
      const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (
          d[i + 3] > 200 &&
          Math.abs(d[i] - rgb[0]) < 30 &&
          Math.abs(d[i + 1] - rgb[1]) < 30 &&
          Math.abs(d[i + 2] - rgb[2]) < 30
        )
          n++;
      }
      return n;
    },
    { metric, rgb },
  );
}

async function points(page: Page, metric: string): Promise<number> {
  return Number(await page.locator(`figure[data-metric="${metric}"]`).getAttribute('data-points'));
}

describe('dashboard webview', () => {
  let p: PanelPage;

  it('draws one chart per metric, a legend and the min/last/best table', async () => {
    p = await openPanel(browser, 'dashboard');
    await p.send(init());
    await settled(p.page);
    const metrics = await p.page
      .locator('figure.chart')
      .evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.metric));
    for (const m of [
      'train/loss',
      'eval/loss',
      'eval/domain/code',
      'eval/domain/math',
      'eval/domain/prose',
      'train/lr',
      'train/grad_norm',
      'train/tokens_per_s',
      'train/lb_loss',
      'train/z_loss',
    ]) {
      assert.ok(metrics.includes(m), `chart for ${m}`);
    }
    assert.equal(await p.page.locator('.legend-item').count(), RUNS.length);
    assert.equal(await p.page.locator('table.summary tbody tr').count(), RUNS.length);
    // The first run is drawn in the theme's charts-blue (#3794ff in Dark Modern).
    assert.ok(
      (await colouredPixels(p.page, 'train/loss', [0x37, 0x94, 0xff])) > 200,
      'blue line pixels on the train loss canvas',
    );
    assert.equal(await points(p.page, 'train/loss'), 101 * 3 + 41);
    await p.screenshot('dashboard-dark');
    assert.deepEqual(await p.cspViolations(), []);
    assert.deepEqual(p.errors, []);
  });

  it('shows every visible run at the hover crosshair', async () => {
    const box = await p.page.locator('figure[data-metric="train/loss"] .chart-plot').boundingBox();
    assert.ok(box);
    await p.page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
    await settled(p.page);
    const rows = await p.page.locator('figure[data-metric="train/loss"] .tooltip-row').allTextContents();
    assert.equal(rows.length, 3, `tooltip rows: ${rows.join(' | ')}`); // the failed run stopped at step 400
    await p.screenshot('dashboard-hover');
    await p.page.mouse.move(0, 0);
  });

  it('appends live lines without a new init', async () => {
    const before = await points(p.page, 'train/loss');
    const t0 = Date.now();
    await p.send({ type: 'appendMetrics', blocks: metricBlocks('btx-s1', 3, 1010, 1200, 1.26) });
    await p.page.waitForFunction(
      (n) =>
        Number(document.querySelector('figure[data-metric="train/loss"]')?.getAttribute('data-points')) > n,
      before,
    );
    assert.ok(Date.now() - t0 < 1000, 'appended points drawn within a second');
    assert.equal(await points(p.page, 'train/loss'), before + 20);
  });

  it('toggles runs from the legend and saves the state', async () => {
    const item = p.page.locator('.legend-item[data-run-id="sparse-s1"]');
    await item.click();
    await settled(p.page);
    assert.equal(await item.getAttribute('aria-pressed'), 'false');
    assert.equal(await points(p.page, 'train/loss'), 121 + 101 * 2);
    const state = (await p.state()) as { hidden: string[] };
    assert.deepEqual(state.hidden, ['sparse-s1']);
    await item.click();
  });

  it('groups seeds by experiment with a band, log scale, pinned charts', async () => {
    await p.page.getByText('Group by experiment').click();
    await p.page.getByText('Log scale').click();
    await p.page.locator('figure[data-metric="eval/loss"] vscode-button', { hasText: 'Pin' }).click();
    await settled(p.page);
    assert.equal(await p.page.locator('.chart-grid.pinned figure[data-metric="eval/loss"]').count(), 1);
    const state = (await p.state()) as { groupByExperiment: boolean; logScale: boolean; pinned: string[] };
    assert.equal(state.groupByExperiment, true);
    assert.equal(state.logScale, true);
    assert.deepEqual(state.pinned, ['eval/loss']);
    await p.screenshot('dashboard-grouped-pinned');
  });

  it('filters runs by regex', async () => {
    await p.page.locator('vscode-textfield').click();
    await p.page.keyboard.type('^btx|sparse');
    await settled(p.page);
    assert.equal(await p.page.locator('.legend-item').count(), 2);
  });

  it('exports a chart to PNG and its data to CSV through the host', async () => {
    await p.page.locator('figure[data-metric="train/lr"] vscode-button', { hasText: 'PNG' }).click();
    await p.page.locator('figure[data-metric="train/lr"] vscode-button', { hasText: 'CSV' }).click();
    const saved = (
      (await p.posted()) as { type: string; format?: string; data?: string; suggestedName?: string }[]
    ).filter((m) => m.type === 'saveFile');
    assert.equal(saved.length, 2);
    assert.equal(saved[0].format, 'png');
    assert.equal(
      Buffer.from(saved[0].data ?? '', 'base64')
        .subarray(1, 4)
        .toString(),
      'PNG',
    );
    assert.equal(saved[1].format, 'csv');
    assert.match(
      saved[1].data ?? '',
      /^run,metric,step,tokens,flops,time_s,value,smoothed\nbtx-s1,train\/lr,0,0,0,/,
    );
    await p.page.close();
  });

  it('restores its options from getState after a reload', async () => {
    const q = await openPanel(browser, 'dashboard', {
      state: {
        panel: 'dashboard',
        runIds: [],
        smoothing: 0,
        logScale: true,
        ignoreOutliers: true,
        groupByExperiment: false,
        xAxis: 'flops',
        filter: 'btx',
        hidden: [],
        pinned: ['train/lr'],
      },
    });
    await q.send(init());
    await settled(q.page);
    assert.equal(await q.page.locator('.legend-item').count(), 1);
    assert.equal(await q.page.locator('.chart-grid.pinned figure[data-metric="train/lr"]').count(), 1);
    assert.equal(
      await q.page.locator('figure[data-metric="train/loss"] .axis-label').textContent(),
      'training FLOPs',
    );
    // x runs over the FLOPs column (up to ~2.5e14), not steps or tokens: ticks in tera
    const ticks = await q.page
      .locator('figure[data-metric="train/loss"] .axis-x .tick text')
      .allTextContents();
    assert.ok(ticks.length > 1 && ticks.slice(1).every((t) => /T$/.test(t)), ticks.join(' '));
    await q.page.close();
  });

  it('places a branch after the seed checkpoint on the "tokens since the seed" axis, and says how', async () => {
    const state = {
      panel: 'dashboard',
      runIds: [],
      smoothing: 0,
      logScale: false,
      ignoreOutliers: false,
      groupByExperiment: false,
      xAxis: 'tokensSinceSeed',
      filter: '',
      hidden: [],
      pinned: [],
    };
    const q = await openPanel(browser, 'dashboard', { state });
    // The seed trains to step 1000 (4.1M tokens); the branch starts from that checkpoint, 500 steps (2M).
    const runs = [
      {
        id: 'seed',
        name: 'seed',
        status: 'done',
        stage: 'dense',
        sinceSeed: { tokens: 0, flops: 0, missing: [] },
      },
      {
        id: 'branch',
        name: 'branch',
        status: 'done',
        stage: 'branch',
        sinceSeed: { tokens: 1000 * 4096, flops: 1000 * 4096 * 6e7, missing: [] },
      },
    ];
    const blocks = [...metricBlocks('seed', 1, 0, 1000), ...metricBlocks('branch', 2, 0, 500)];
    await q.send({ type: 'init', panel: 'dashboard', runIds: [], runs, blocks });
    await settled(q.page);
    const label = q.page.locator('figure[data-metric="train/loss"] .axis-label');
    assert.match((await label.textContent()) ?? '', /^tokens since the seed/);
    assert.match((await label.locator('title').textContent()) ?? '', /max over its parents/);
    // The axis runs to the branch's end after the seed (6.1M), not to the longest run's own tokens (4.1M).
    const lastTick = async (): Promise<number> => {
      const ticks = await q.page
        .locator('figure[data-metric="train/loss"] .axis-x .tick text')
        .allTextContents();
      return Math.max(
        ...ticks.map((t) => parseFloat(t) * (t.endsWith('M') ? 1e6 : t.endsWith('k') ? 1e3 : 1)),
      );
    };
    assert.ok((await lastTick()) >= 5.5e6, String(await lastTick()));
    // A runs message without offsets (an older host) puts every run back at 0.
    await q.send({ type: 'runs', runs: runs.map(({ sinceSeed: _, ...r }) => r) });
    await settled(q.page);
    assert.ok((await lastTick()) < 4.5e6, String(await lastTick()));
    assert.deepEqual(q.errors, []);
    await q.page.close();
  });

  it('drops malformed messages, counts them and keeps working', async () => {
    const q = await openPanel(browser, 'dashboard');
    const bad: unknown[] = [
      null,
      'init',
      42,
      { type: 'nope' },
      { type: 'init', panel: 'dashboard', runIds: [], runs: 'x', blocks: [] },
      {
        type: 'init',
        panel: 'dashboard',
        runIds: [],
        runs: RUNS,
        blocks: [{ runId: 'a', split: 'train', step: [1, 2], tokens: [1], time: [1, 2], values: {} }],
      },
      {
        type: 'appendMetrics',
        blocks: [
          { runId: 'a', split: 'train', step: ['1'], tokens: [null], time: [null], values: { loss: [1] } },
        ],
      },
      {
        type: 'appendMetrics',
        blocks: [{ runId: 'a', split: 'oops', step: [1], tokens: [null], time: [null], values: {} }],
      },
      { type: 'runs', runs: [{ id: 'x' }] },
      {
        type: 'appendMetrics',
        blocks: [
          { runId: 'a', split: 'train', step: [1], tokens: [null], time: [null], values: { loss: [true] } },
        ],
      },
    ];
    for (const m of bad) await q.send(m);
    await settled(q.page);
    assert.equal(await q.page.evaluate(() => document.body.dataset.droppedMessages), String(bad.length));
    const errors = ((await q.posted()) as { type: string }[]).filter((m) => m.type === 'protocolError');
    assert.equal(errors.length, bad.length);
    await q.send(init());
    await settled(q.page);
    assert.ok((await points(q.page, 'train/loss')) > 0, 'still draws after bad input');
    assert.deepEqual(q.errors, []);
    await q.page.close();
  });

  for (const theme of ['light', 'hc'] as const) {
    it(`renders with the ${theme} theme`, async () => {
      const q = await openPanel(browser, 'dashboard', { theme });
      await q.send(init());
      await settled(q.page);
      const bg = await q.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.equal(bg, theme === 'light' ? 'rgb(255, 255, 255)' : 'rgb(0, 0, 0)');
      await q.screenshot(`dashboard-${theme}`);
      assert.deepEqual(await q.cspViolations(), []);
      await q.page.close();
    });
  }
});
