// A lone eval point at the left or right end of a chart is drawn whole, and the dashboard draws
// each run in the colour the host assigned it (extension/src/runs/runColors.ts).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { runColors } from '../../extension/src/runs/runColors';
import type { MetricBlock, RunSummary } from '../../webview/src/protocol';
import { demoRuns } from '../unit/demoRuns';
import { launch, openPanel, settled } from './harness';

let browser: Browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const evalBlock = (runId: string, steps: number[], loss: number[]): MetricBlock => ({
  runId,
  split: 'eval',
  step: steps,
  tokens: steps.map((s) => s * 512),
  time: steps.map((s) => s / 10),
  values: { loss },
});

/** Device-pixel columns of the chart canvas that hold a colour (RGB within tolerance), and the plot's left edge. */
async function columns(
  page: Page,
  metric: string,
  rgb: [number, number, number],
): Promise<{ min: number; max: number; left: number; right: number }> {
  return page.evaluate(
    ({ metric, rgb }) => {
      const canvas = document.querySelector<HTMLCanvasElement>(`figure[data-metric="${metric}"] canvas`);
      const ctx = canvas?.getContext('2d');
      if (!canvas || !ctx) return { min: -1, max: -1, left: 0, right: 0 };
      const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let min = Infinity,
        max = -Infinity;
      for (let i = 0; i < d.length; i += 4) {
        if (
          d[i + 3] > 200 &&
          Math.abs(d[i] - rgb[0]) < 40 &&
          Math.abs(d[i + 1] - rgb[1]) < 40 &&
          Math.abs(d[i + 2] - rgb[2]) < 40
        ) {
          const x = (i / 4) % canvas.width;
          min = Math.min(min, x);
          max = Math.max(max, x);
        }
      }
      const dpr = window.devicePixelRatio || 1;
      // The chart's plot margins (lineChart.ts MARGIN.left / right).
      return { min, max, left: 56 * dpr, right: canvas.width - 14 * dpr };
    },
    { metric, rgb },
  );
}

describe('chart edges and run colours', () => {
  it('draws a lone first or last eval point as a whole dot, not half-clipped at the edge', async () => {
    const runs: RunSummary[] = [
      { id: 'early', name: 'early', status: 'done', color: '#ff0000' },
      { id: 'long', name: 'long', status: 'running', color: '#00ff00' },
      { id: 'late', name: 'late', status: 'done', color: '#0000ff' },
    ];
    const blocks = [
      evalBlock('early', [10], [3.1]),
      evalBlock('long', [20, 40, 60, 80], [3.0, 2.8, 2.7, 2.6]),
      evalBlock('late', [100], [2.5]),
    ];
    const p = await openPanel(browser, 'dashboard');
    await p.send({ type: 'init', panel: 'dashboard', runIds: [], runs, blocks });
    await settled(p.page);
    const red = await columns(p.page, 'eval/loss', [255, 0, 0]);
    const blue = await columns(p.page, 'eval/loss', [0, 0, 255]);
    assert.ok(Number.isFinite(red.min) && Number.isFinite(blue.min), 'both dots drawn');
    // Whole dots: left of the first dot's centre as much as right of it, inside the plot.
    assert.ok(red.min > red.left + 1, `left dot starts inside the plot (${red.min} > ${red.left})`);
    assert.ok(blue.max < blue.right - 1, `right dot ends inside the plot (${blue.max} < ${blue.right})`);
    assert.ok(Math.abs(red.max - red.min - (blue.max - blue.min)) <= 1, 'both dots have their full width');
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('a run has the colour the host assigned in the legend and on the canvas', async () => {
    const infos = demoRuns();
    const colors = runColors(infos);
    const runs: RunSummary[] = infos.slice(11, 14).map((r) => ({
      id: r.id,
      name: r.id,
      status: 'done',
      method: r.method,
      stage: r.stage,
      color: colors.get(r.id),
    }));
    const blocks = runs.map((r, i) =>
      evalBlock(r.id, [10, 20, 30], [3 - i * 0.2, 2.8 - i * 0.2, 2.7 - i * 0.2]),
    );
    const p = await openPanel(browser, 'dashboard');
    await p.send({ type: 'init', panel: 'dashboard', runIds: [], runs, blocks });
    await settled(p.page);
    const swatches = await p.page
      .locator('.legend-item')
      .evaluateAll((els) =>
        els.map((e) => [
          (e as HTMLElement).dataset.runId,
          getComputedStyle(e.querySelector('.swatch') as Element).backgroundColor,
        ]),
      );
    const rgb = (css: string): string => {
      const c = css.match(/hsl\((\d+(?:\.\d+)?), (\d+)%, (\d+)%\)/);
      assert.ok(c, css);
      // hsl → rgb as CSS computes it.
      const [h, s, l] = [Number(c[1]) / 360, Number(c[2]) / 100, Number(c[3]) / 100];
      const f = (n: number): number => {
        const k = (n + h * 12) % 12;
        return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
      };
      return `rgb(${f(0)}, ${f(8)}, ${f(4)})`;
    };
    assert.deepEqual(
      swatches,
      runs.map((r) => [r.id, rgb(r.color as string)]),
    );
    const [r0, g0, b0] = (rgb(runs[0].color as string).match(/\d+/g) ?? []).map(Number);
    const line = await columns(p.page, 'eval/loss', [r0, g0, b0]);
    assert.ok(Number.isFinite(line.min), 'the first run is drawn in its colour');
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });
});
