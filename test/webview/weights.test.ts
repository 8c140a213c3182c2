// The router panel's Weights tab in headless Chromium: the request/answer
// handshake with the host, heatmaps, bars and drift lines, the engine's alarms,
// the compare table, keyboard use, and screenshots in three themes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { routingRows, RUNS, steps } from './fixtures';
import { launch, openPanel, settled, type PanelPage } from './harness';
import { realReports, weightReport } from './weightsFixtures';

let browser: Browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const RUN_TARGET = { kind: 'run', label: 'run btx-s1' } as const;

const init = (show: boolean, target: unknown = RUN_TARGET): unknown => ({
  type: 'init',
  panel: 'router',
  runIds: ['btx-s1'],
  runs: RUNS,
  routing: [
    {
      runId: 'btx-s1',
      rows: routingRows({ layers: 6, experts: 8, steps: steps(500, 100), routers: ['ffn', 'attn'], seed: 2 }),
    },
  ],
  weights: { target, show },
});

const requests = async (p: PanelPage): Promise<{ type: string; force?: boolean }[]> =>
  ((await p.posted()) as { type: string; force?: boolean }[]).filter((m) => m.type === 'requestAnalysis');

describe('router panel Weights tab', () => {
  for (const theme of ['dark', 'light', 'hc'] as const) {
    it(`shows similarity, norms, drift and alarms of a run (${theme})`, async () => {
      const p = await openPanel(browser, 'router', { theme, width: 1280, height: 1250 });
      await p.send(init(true));
      await settled(p.page);
      assert.equal((await requests(p)).length, 1, 'the tab asks the host once when shown');
      await p.send({
        type: 'analysisStatus',
        target: RUN_TARGET,
        state: 'running',
        detail: 'Analyzing run btx-s1: progress in the terminal "MoE Lab: analyze btx-s1"',
        job: { index: 1, count: 1 },
      });
      await settled(p.page);
      assert.equal(await p.page.locator('vscode-progress-ring').count(), 1);
      if (theme === 'dark') await p.screenshot('weights-running-dark');

      const report = weightReport({ layers: 6, experts: 8, steps: [0, 500, 1000, 1500, 2000] });
      await p.send({
        type: 'analysisResult',
        target: RUN_TARGET,
        cached: true,
        writtenAt: Date.UTC(2026, 0, 5, 12),
        report,
      });
      await settled(p.page);
      assert.equal(await p.page.locator('vscode-progress-ring').count(), 0);
      // Opens on the first layer with an alarm: layer 3's FFN.
      assert.match(
        (await p.page.locator('.weights-body .section-title').textContent()) ?? '',
        /Layer 3 · FFN router · 8 experts/,
      );
      const kinds = await p.page
        .locator('[data-tab="weights"] .warnings .warning')
        .evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.kind));
      assert.deepEqual(kinds, ['collapsed_experts', 'router_near_zero', 'router_identical']);
      assert.match(
        (await p.page.locator('[data-kind="collapsed_experts"]').textContent()) ?? '',
        /experts 2, 5 collapsed/,
      );
      for (const card of [
        'expert-similarity',
        'router-similarity',
        'expert-norms',
        'router-norms',
        'drift',
        'parents',
      ]) {
        assert.equal(await p.page.locator(`[data-card="${card}"]`).count(), 1, card);
      }
      // The collapsed pair is outlined in the expert heatmap, bars of the pair flagged.
      assert.equal(await p.page.locator('[data-card="expert-similarity"] .matrix-mark').count(), 2);
      assert.equal(
        await p.page.locator('[data-card="drift"] path.line').count(),
        9,
        'one line per expert and the router',
      );
      assert.match(
        (await p.page.locator('[data-card="router-norms"] .note').textContent()) ?? '',
        /expert 6 gets no routing signal/,
      );
      // Hover readouts: a heatmap cell, the drift chart.
      const cell = 300 / 8;
      await p.page
        .locator('[data-card="expert-similarity"] .matrix-cells')
        .hover({ position: { x: 5.5 * cell, y: 2.5 * cell } });
      assert.match(
        (await p.page.locator('[data-card="expert-similarity"] .hover-readout').textContent()) ?? '',
        /^expert 2 × expert 5 · cosine 0\.9\d+ · above 0\.95$/,
      );
      const drift = p.page.locator('[data-card="drift"] svg.drift-chart');
      const right = await drift.evaluate((e) => e.getBoundingClientRect().right);
      await drift.dispatchEvent('pointermove', { clientX: right - 5, clientY: 10 });
      assert.match(
        (await p.page.locator('[data-card="drift"] .hover-readout').textContent()) ?? '',
        /^step 2000: expert 5 [\d.]+ · router 0\.35/,
      );
      await p.page.evaluate(() => window.scrollTo(0, 0));
      await p.screenshot(`weights-${theme}`);
      assert.deepEqual(await p.cspViolations(), []);
      assert.deepEqual(p.errors, []);
      await p.page.close();
    });
  }

  it('is keyboard-usable: tabs, layer slider, router select, alarm links, analyze again', async () => {
    const p = await openPanel(browser, 'router');
    await p.send(init(false));
    await settled(p.page);
    assert.equal((await requests(p)).length, 0, 'no analysis while the Routing tab is shown');
    // Tab headers: arrow to Weights, Enter selects.
    await p.page.locator('vscode-tab-header').first().focus();
    await p.page.keyboard.press('ArrowRight');
    await p.page.keyboard.press('Enter');
    await settled(p.page);
    assert.equal((await requests(p)).length, 1);
    assert.equal(((await p.state()) as { tab?: string }).tab, 'weights');
    const report = weightReport({ layers: 6, experts: 8, steps: [0, 1000] });
    await p.send({
      type: 'analysisResult',
      target: RUN_TARGET,
      cached: false,
      writtenAt: Date.now(),
      report,
    });
    await settled(p.page);

    const range = p.page.locator('[data-tab="weights"] input[type=range]');
    await range.focus();
    await p.page.keyboard.press('ArrowRight');
    await settled(p.page);
    assert.equal(((await p.state()) as { weightsLayer?: number }).weightsLayer, 4);
    assert.match((await p.page.locator('.weights-body .section-title').textContent()) ?? '', /^Layer 4/);

    // "Show layer 4 attention" on the identical-router alarm.
    await p.page.getByRole('button', { name: 'Show layer 4 attention' }).click();
    await settled(p.page);
    assert.match(
      (await p.page.locator('.weights-body .section-title').textContent()) ?? '',
      /Layer 4 · attention router/,
    );
    assert.equal(await p.page.locator('[data-card="router-similarity"] .matrix-mark').count(), 2);
    const labels = await p.page.locator('[data-tab="weights"] vscode-label').allTextContents();
    assert.deepEqual(labels, ['Router', 'Expert matrix']);

    // The router heatmap reads out by keyboard: focus starts on (0, 1), arrows move.
    await p.page.locator('[data-card="router-similarity"] .matrix-cells').focus();
    await p.page.keyboard.press('ArrowDown');
    await p.page.keyboard.press('ArrowRight');
    await p.page.keyboard.press('ArrowRight');
    await p.page.keyboard.press('ArrowRight');
    assert.match(
      (await p.page.locator('[data-card="router-similarity"] .hover-readout').textContent()) ?? '',
      /^expert 1 × expert 4 · cosine 0\.9997 · identical$/,
    );
    assert.equal(
      await p.page.locator('[data-card="router-similarity"] .matrix-cursor').getAttribute('visibility'),
      'visible',
    );

    await p.page.getByRole('button', { name: /Run moelab analyze again/ }).click();
    const reqs = await requests(p);
    assert.deepEqual(
      reqs.map((r) => r.force),
      [false, true],
    );
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('lists the tensors that differ between two checkpoints (real engine output)', async () => {
    const { analysis, compare } = realReports();
    const pair = { kind: 'pair', label: 'step-100 → step-300' } as const;
    const p = await openPanel(browser, 'router', { height: 1300 });
    await p.send(init(true, pair));
    await p.send({
      type: 'analysisResult',
      target: pair,
      cached: false,
      writtenAt: Date.UTC(2026, 0, 5, 12),
      report: analysis,
      compare,
    });
    await settled(p.page);
    assert.equal(await p.page.locator('.compare-table tbody tr').count(), compare.num_changed);
    const first = await p.page.locator('.compare-table tbody th').first().textContent();
    assert.equal(first, compare.tensors[0].name, 'largest relative change first');
    assert.match(
      (await p.page.locator('[data-card="compare"] h3').textContent()) ?? '',
      new RegExp(`${compare.num_changed} of ${compare.num_tensors}`),
    );
    // The engine flags layer 1's FFN: experts 1 and 2 collapsed, router row 3 near zero.
    assert.match(
      (await p.page.locator('[data-tab="weights"] .warnings').textContent()) ?? '',
      /experts 1, 2 collapsed/,
    );
    assert.match((await p.page.locator('.weights-body .section-title').textContent()) ?? '', /Layer 1 · FFN/);
    await p.screenshot('weights-compare-dark');
    // Filter as you type; the field keeps focus.
    await p.page.locator('[data-card="compare"] vscode-textfield').click();
    await p.page.keyboard.type('gate');
    await settled(p.page);
    const names = await p.page.locator('.compare-table tbody th').allTextContents();
    assert.ok(names.length > 0 && names.every((n) => n.includes('gate')), names.join(','));
    assert.equal(
      await p.page.evaluate(() => document.activeElement?.tagName.toLowerCase()),
      'vscode-textfield',
    );
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('keeps 256 experts readable, drawing in under 2 s', async () => {
    const p = await openPanel(browser, 'router', { height: 1100 });
    await p.send(init(true));
    const report = weightReport({ layers: 4, experts: 256, steps: [0, 1000, 2000] });
    const t0 = Date.now();
    await p.send({
      type: 'analysisResult',
      target: RUN_TARGET,
      cached: true,
      writtenAt: Date.UTC(2026, 0, 5, 12),
      report,
    });
    await settled(p.page);
    const ms = Date.now() - t0;
    const renderMs = Number(await p.page.evaluate(() => document.body.dataset.weightsRenderMs));
    console.log(
      `# 4 layers x 2 routers x 256 experts: message to paint ${ms} ms (of which drawing ${renderMs} ms; the rest is the ${(JSON.stringify(report).length / 1e6).toFixed(0)} MB message)`,
    );
    assert.ok(renderMs < 2000, `drawing took ${renderMs} ms`);
    assert.equal(await p.page.locator('[data-card="drift"] path.line').count(), 257);
    assert.match(
      (await p.page.locator('[data-card="drift"] .hover-readout').textContent()) ?? '',
      /^257 lines over 3 checkpoints/,
    );
    // Cells of 1.2 px: no outlines, the colour carries the collapse.
    assert.equal(await p.page.locator('.matrix-mark').count(), 0);
    await p.screenshot('weights-256');
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });

  it('shows failures and unavailability, and drops malformed analysis messages', async () => {
    const p = await openPanel(browser, 'router');
    await p.send(init(true));
    await p.send({
      type: 'analysisStatus',
      target: null,
      state: 'unavailable',
      detail: 'Run btx-s1 has no checkpoints yet.',
    });
    await settled(p.page);
    assert.match(
      (await p.page.locator('[data-tab="weights"] .empty-state').textContent()) ?? '',
      /no checkpoints yet/,
    );
    await p.send({
      type: 'analysisStatus',
      target: RUN_TARGET,
      state: 'failed',
      detail: 'moelab analyze exited with code 1.',
    });
    await settled(p.page);
    assert.match(
      (await p.page.locator('[data-tab="weights"] [role=alert]').textContent()) ?? '',
      /exited with code 1/,
    );
    const good = weightReport({ layers: 1, experts: 4, steps: [0, 10] });
    // A late result of a target shown earlier is ignored.
    await p.send({
      type: 'analysisResult',
      target: { kind: 'checkpoint', label: 'btx-s1/step-10' },
      cached: false,
      writtenAt: 1,
      report: good,
    });
    await settled(p.page);
    assert.equal(await p.page.locator('[data-tab="weights"] .weights-grid').count(), 0);
    const badMatrix = structuredClone(good);
    badMatrix.layers[0].router_cosine.pop();
    const badDrift = structuredClone(good);
    badDrift.layers[0].drift.steps.push(20);
    const bad = [
      { type: 'analysisResult', target: RUN_TARGET, cached: false, writtenAt: 1, report: badMatrix },
      { type: 'analysisResult', target: RUN_TARGET, cached: false, writtenAt: 1, report: badDrift },
      {
        type: 'analysisResult',
        target: RUN_TARGET,
        cached: false,
        writtenAt: 1,
        report: { ...good, mode: 'compare' },
      },
      { type: 'analysisStatus', target: RUN_TARGET, state: 'exploded', detail: '' },
      {
        type: 'analysisStatus',
        target: RUN_TARGET,
        state: 'running',
        detail: 'x',
        job: { index: 3, count: 2 },
      },
    ];
    for (const m of bad) await p.send(m);
    await settled(p.page);
    assert.equal(await p.page.evaluate(() => document.body.dataset.droppedMessages), String(bad.length));
    assert.deepEqual(p.errors, []);
    await p.page.close();
  });
});
