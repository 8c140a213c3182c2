// The dashboard: controls, legend, summary table and one chart per metric, fed
// by protocol messages. Live appends extend the series store and redraw only the
// charts whose metrics changed, on the next animation frame.
import type { DashboardState, HostToDashboardMessage, MetricBlock, RunSummary, XAxisMode } from '../protocol';
import { button, checkbox, select, slider, textField } from '../shared/controls';
import { csvField, fileStem, saveCsv, savePng } from '../shared/download';
import { el } from '../shared/dom';
import { fmtDuration, fmtSi, fmtValue } from '../shared/format';
import { LineChart, type ChartLine } from '../shared/lineChart';
import { onThemeChange, readTheme, type ThemeColors } from '../shared/theme';
import { timed } from '../shared/perf';
import { saveState } from '../shared/vscodeApi';
import { chartCatalog, type ChartSpec } from './chartCatalog';
import { groupBand } from './groupBand';
import { runMatcher } from './runFilter';
import { SeriesStore, type Series } from './seriesStore';

interface ChartSlot {
  spec: ChartSpec;
  chart: LineChart;
  pinButton: HTMLElement;
}

const X_LABEL: Record<XAxisMode, string> = {
  step: 'step',
  tokens: 'tokens',
  flops: 'training FLOPs',
  time: 'time',
  tokensSinceSeed: 'tokens since the seed',
  flopsSinceSeed: 'training FLOPs since the seed',
};

/** What the "since the seed" axes add up (the rule of extension/src/runs/sinceSeed.ts). */
const X_TITLE: Partial<Record<XAxisMode, string>> = {
  tokensSinceSeed:
    'Each run starts after the checkpoint it started from: its parent’s tokens at that checkpoint plus the parent’s own start, up to the seed. ' +
    'A merge of parallel branches (an upcycle) starts after its longest branch: the timeline, the max over its parents.',
  flopsSinceSeed:
    'Each run starts after the compute spent on the way from the seed: the training FLOPs every ancestor run executed up to the checkpoint used. ' +
    'For a merge of parallel branches (an upcycle) that is the sum over all branches plus the seed, counted once.',
};

export function defaultDashboardState(runIds: string[] = []): DashboardState {
  return {
    panel: 'dashboard',
    runIds,
    smoothing: 0.6,
    logScale: false,
    ignoreOutliers: false,
    groupByExperiment: false,
    xAxis: 'step',
    filter: '',
    hidden: [],
    pinned: [],
  };
}

export class DashboardApp {
  private runs: RunSummary[] = [];
  private store = new SeriesStore();
  private readonly slots = new Map<string, ChartSlot>();
  private highlighted: string | undefined;
  private theme: ThemeColors = readTheme();
  private dirty = new Set<string>();
  private framePending = false;
  private tablePending = false;

  private readonly legend = el('div', {
    class: 'legend',
    role: 'group',
    'aria-label': 'Runs: click to show or hide, hover to highlight',
  });
  private readonly table = el('table', { class: 'summary' });
  private readonly pinnedGrid = el('div', { class: 'chart-grid pinned', 'aria-label': 'Pinned charts' });
  private readonly grid = el('div', { class: 'chart-grid' });
  private readonly empty = el('div', {
    class: 'empty-state',
    text: 'Waiting for metrics… Runs appear here as soon as their metrics.jsonl has a line.',
  });

  constructor(
    private readonly root: HTMLElement,
    private state: DashboardState,
  ) {
    this.store.setSmoothing(state.smoothing);
    root.replaceChildren(
      this.toolbar(),
      this.legend,
      el('details', { class: 'summary-wrap', open: true }, [
        el('summary', { text: 'Min / last / best' }),
        this.table,
      ]),
      this.empty,
      this.pinnedGrid,
      this.grid,
    );
    onThemeChange(() => {
      this.theme = readTheme();
      this.renderLegend();
      this.redrawAll();
    });
  }

  handle(message: HostToDashboardMessage): void {
    switch (message.type) {
      case 'init':
        this.store = new SeriesStore();
        this.store.setSmoothing(this.state.smoothing);
        this.slots.clear();
        this.setRuns(message.runs);
        this.update({ runIds: message.runIds });
        this.appendBlocks(message.blocks, true);
        break;
      case 'runs':
        this.setRuns(message.runs);
        this.renderLegend();
        this.redrawAll();
        break;
      case 'appendMetrics':
        this.appendBlocks(message.blocks, false);
        break;
    }
  }

  private setRuns(runs: RunSummary[]): void {
    this.runs = runs;
    for (const r of runs) this.store.setOffset(r.id, r.sinceSeed ?? { tokens: 0, flops: 0 });
  }

  private appendBlocks(blocks: MetricBlock[], fresh: boolean): void {
    const known = new Set(this.store.metrics());
    let newMetric = fresh;
    for (const b of blocks) {
      for (const m of timed('dashboard: append', () => this.store.append(b))) {
        this.dirty.add(m);
        if (!known.has(m)) newMetric = true;
      }
    }
    for (const id of this.store.runIds()) {
      if (!this.runs.some((r) => r.id === id)) this.runs.push({ id, name: id, status: 'running' });
    }
    if (newMetric) timed('dashboard: build charts', () => this.rebuildCharts());
    if (fresh) timed('dashboard: legend', () => this.renderLegend());
    this.scheduleFrame();
  }

  private persist(): void {
    saveState(this.state);
  }

  private update(patch: Partial<DashboardState>): void {
    this.state = { ...this.state, ...patch };
    this.persist();
  }

  private toolbar(): HTMLElement {
    const s = this.state;
    return el('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Dashboard options' }, [
      textField('Filter runs', s.filter, 'name or /regex/', (v) => {
        this.update({ filter: v });
        this.renderLegend();
        this.redrawAll();
      }),
      select<XAxisMode>(
        'X axis',
        [
          { value: 'step', label: 'Step' },
          { value: 'tokens', label: 'Tokens' },
          { value: 'flops', label: 'FLOPs' },
          { value: 'tokensSinceSeed', label: 'Tokens since the seed', description: X_TITLE.tokensSinceSeed },
          { value: 'flopsSinceSeed', label: 'FLOPs since the seed', description: X_TITLE.flopsSinceSeed },
          { value: 'time', label: 'Wall time' },
        ],
        s.xAxis,
        (v) => {
          this.update({ xAxis: v });
          for (const slot of this.slots.values()) slot.chart.resetZoom();
          this.redrawAll();
        },
      ),
      slider(
        'Smoothing',
        0,
        0.99,
        0.01,
        s.smoothing,
        (v) => v.toFixed(2),
        (v) => {
          this.update({ smoothing: v });
          this.store.setSmoothing(v);
          this.redrawAll();
        },
      ),
      checkbox('Log scale', s.logScale, (v) => {
        this.update({ logScale: v });
        this.redrawAll();
      }),
      checkbox('Ignore outliers', s.ignoreOutliers, (v) => {
        this.update({ ignoreOutliers: v });
        this.redrawAll();
      }),
      checkbox('Group by experiment', s.groupByExperiment, (v) => {
        this.update({ groupByExperiment: v });
        this.redrawAll();
      }),
      button('Reset zoom', () => {
        for (const slot of this.slots.values()) slot.chart.resetZoom();
      }),
    ]);
  }

  /** The host's colour for the run (the same in every panel); the theme's palette for senders without one. */
  private colorOf(runId: string): string {
    const i = this.runs.findIndex((r) => r.id === runId);
    const color = this.runs[i]?.color;
    if (color) return color;
    const palette = this.theme.series;
    return palette[(i < 0 ? 0 : i) % palette.length];
  }

  private matchedRuns(): RunSummary[] {
    const match = runMatcher(this.state.filter);
    return this.runs.filter(match);
  }

  private visibleRuns(): RunSummary[] {
    const hidden = new Set(this.state.hidden);
    return this.matchedRuns().filter((r) => !hidden.has(r.id));
  }

  private renderLegend(): void {
    const hidden = new Set(this.state.hidden);
    const items = this.matchedRuns().map((run) => {
      const on = !hidden.has(run.id);
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = this.colorOf(run.id);
      const b = el(
        'button',
        {
          class: `legend-item${on ? '' : ' off'}`,
          type: 'button',
          'aria-pressed': String(on),
          title: `${run.id}${run.experiment ? ` · ${run.experiment}` : ''} · ${run.status}`,
        },
        [
          swatch,
          el('span', { text: run.name }),
          el('span', { class: `status status-${run.status}`, text: run.status }),
        ],
      );
      b.dataset.runId = run.id;
      b.addEventListener('click', () => {
        const next = new Set(this.state.hidden);
        if (next.has(run.id)) next.delete(run.id);
        else next.add(run.id);
        this.update({ hidden: [...next] });
        this.renderLegend();
        this.redrawAll();
      });
      const highlight = (id: string | undefined): void => {
        this.highlighted = id;
        this.redrawAll();
      };
      b.addEventListener('pointerenter', () => highlight(run.id));
      b.addEventListener('pointerleave', () => highlight(undefined));
      b.addEventListener('focus', () => highlight(run.id));
      b.addEventListener('blur', () => highlight(undefined));
      return b;
    });
    this.legend.replaceChildren(
      ...(items.length
        ? items
        : [el('span', { class: 'muted', text: this.runs.length ? 'No run matches the filter.' : '' })]),
    );
  }

  private rebuildCharts(): void {
    const specs = chartCatalog(this.store.metrics());
    for (const spec of specs) {
      if (this.slots.has(spec.metric)) continue;
      const pinButton = button('Pin', () => this.togglePin(spec.metric), {
        title: `Pin ${spec.title}`,
        pressed: false,
      });
      const actions = el('div', { class: 'chart-actions' }, [
        pinButton,
        button('PNG', () => this.exportPng(spec.metric), { title: `Save ${spec.title} as PNG` }),
        button('CSV', () => this.exportCsv(spec.metric), { title: `Save ${spec.title} data as CSV` }),
      ]);
      const chart = new LineChart(spec.title, actions);
      chart.root.dataset.metric = spec.metric;
      this.slots.set(spec.metric, { spec, chart, pinButton });
    }
    this.placeCharts();
    this.empty.hidden = specs.length > 0;
  }

  private placeCharts(): void {
    const pinned = new Set(this.state.pinned);
    const ordered = chartCatalog(this.slots.keys());
    this.pinnedGrid.replaceChildren(
      ...ordered
        .filter((s) => pinned.has(s.metric))
        .map((s) => this.slots.get(s.metric)?.chart.root as HTMLElement),
    );
    this.grid.replaceChildren(
      ...ordered
        .filter((s) => !pinned.has(s.metric))
        .map((s) => this.slots.get(s.metric)?.chart.root as HTMLElement),
    );
    this.pinnedGrid.hidden = pinned.size === 0;
    for (const slot of this.slots.values()) {
      const on = pinned.has(slot.spec.metric);
      slot.pinButton.textContent = on ? 'Unpin' : 'Pin';
      slot.pinButton.setAttribute('aria-pressed', String(on));
      slot.chart.root.classList.toggle('is-pinned', on);
    }
  }

  private togglePin(metric: string): void {
    const next = new Set(this.state.pinned);
    if (next.has(metric)) next.delete(metric);
    else next.add(metric);
    this.update({ pinned: [...next] });
    this.placeCharts();
    this.redrawAll();
  }

  private redrawAll(): void {
    for (const m of this.slots.keys()) this.dirty.add(m);
    this.scheduleFrame();
  }

  /** The dirty charts are drawn in this frame (not one later); the summary table in the next, so that
   *  a million points' min/last scan does not hold back the curves' first paint. */
  private scheduleFrame(): void {
    if (this.framePending) return;
    this.framePending = true;
    requestAnimationFrame(() => {
      this.framePending = false;
      const dirty = this.dirty;
      this.dirty = new Set();
      for (const m of dirty) this.updateChart(m);
      for (const m of dirty) this.slots.get(m)?.chart.drawNow();
      if (this.tablePending) return;
      this.tablePending = true;
      requestAnimationFrame(() => {
        this.tablePending = false;
        timed('dashboard: summary table', () => this.renderTable());
      });
    });
  }

  private linesFor(metric: string): ChartLine[] {
    const { smoothing, xAxis, groupByExperiment } = this.state;
    const runs = this.visibleRuns();
    const lines: ChartLine[] = [];
    const smooth = smoothing > 0;
    if (groupByExperiment) {
      const groups = new Map<string, RunSummary[]>();
      for (const r of runs) {
        const key = r.experiment ?? `run:${r.id}`;
        groups.set(key, [...(groups.get(key) ?? []), r]);
      }
      for (const [key, members] of groups) {
        const series = members
          .map((r) => this.store.get(r.id, metric))
          .filter((s): s is Series => s !== undefined && s.n > 0);
        if (!series.length) continue;
        const band = groupBand(series.map((s) => ({ xs: s.x(xAxis), ys: smooth ? s.smooth : s.y, n: s.n })));
        const label = key.startsWith('run:')
          ? members[0].name
          : `${key} (${series.length} run${series.length > 1 ? 's' : ''})`;
        lines.push({
          id: `group:${key}`,
          label,
          color: this.colorOf(members[0].id),
          xs: band.xs,
          ys: band.mean,
          n: band.n,
          band: series.length > 1 ? { lo: band.lo, hi: band.hi } : undefined,
        });
      }
      return lines;
    }
    for (const r of runs) {
      const s = this.store.get(r.id, metric);
      if (!s || s.n === 0) continue;
      lines.push({
        id: r.id,
        label: r.name,
        color: this.colorOf(r.id),
        xs: s.x(xAxis),
        ys: smooth ? s.smooth : s.y,
        raw: smooth ? s.y : undefined,
        n: s.n,
      });
    }
    return lines;
  }

  private highlightId(): string | undefined {
    if (!this.highlighted || !this.state.groupByExperiment) return this.highlighted;
    const run = this.runs.find((r) => r.id === this.highlighted);
    return run?.experiment ? `group:${run.experiment}` : `group:run:${this.highlighted}`;
  }

  private updateChart(metric: string): void {
    const slot = this.slots.get(metric);
    if (!slot) return;
    const x = this.state.xAxis;
    slot.chart.setData(this.linesFor(metric), {
      logScale: this.state.logScale,
      ignoreOutliers: this.state.ignoreOutliers,
      xLabel: X_LABEL[x],
      xTitle: X_TITLE[x],
      xFormat: x === 'time' ? fmtDuration : fmtSi,
      highlighted: this.highlightId(),
      theme: this.theme,
    });
  }

  private renderTable(): void {
    const runs = this.visibleRuns();
    const head = el(
      'tr',
      {},
      [
        'Run',
        'Train loss (last)',
        'Train loss (min)',
        'Eval loss (last)',
        'Eval loss (best)',
        'Best at step',
      ].map((h) => el('th', { scope: 'col', text: h })),
    );
    // Runs without a loss (upcycle and eval stages) would only add rows of dashes.
    const withLoss = runs.filter(
      (r) =>
        (this.store.get(r.id, 'train/loss')?.n ?? 0) > 0 || (this.store.get(r.id, 'eval/loss')?.n ?? 0) > 0,
    );
    const rows = withLoss.map((r) => {
      const train = this.store.get(r.id, 'train/loss');
      const evl = this.store.get(r.id, 'eval/loss');
      const stat = (s: typeof train): { last: number; min: number; at: number } => {
        if (!s || s.n === 0) return { last: NaN, min: NaN, at: NaN };
        const k = argMin(s.y, s.n);
        return { last: s.y[s.n - 1], min: k < 0 ? Infinity : s.y[k], at: k < 0 ? NaN : s.step[k] };
      };
      const t = stat(train),
        e = stat(evl);
      const f = (v: number): string => (Number.isFinite(v) ? fmtValue(v) : '–');
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = this.colorOf(r.id);
      return el('tr', {}, [
        el('th', { scope: 'row' }, [swatch, r.name]),
        el('td', { text: f(t.last) }),
        el('td', { text: f(t.min) }),
        el('td', { text: f(e.last) }),
        el('td', { text: f(e.min) }),
        el('td', { text: Number.isFinite(e.at) ? String(e.at) : '–' }),
      ]);
    });
    this.table.replaceChildren(el('thead', {}, [head]), el('tbody', {}, rows));
  }

  private exportPng(metric: string): void {
    const slot = this.slots.get(metric);
    if (slot) savePng(`${fileStem(slot.spec.title)}.png`, slot.chart.toCanvas());
  }

  private exportCsv(metric: string): void {
    const slot = this.slots.get(metric);
    if (!slot) return;
    const out = ['run,metric,step,tokens,flops,time_s,value,smoothed'];
    for (const r of this.visibleRuns()) {
      const s = this.store.get(r.id, metric);
      if (!s) continue;
      const time = s.x('time');
      for (let i = 0; i < s.n; i++) {
        out.push(
          [r.id, metric, s.step[i], s.tokens[i], s.flops[i], time[i], s.y[i], s.smooth[i]]
            .map(csvField)
            .join(','),
        );
      }
    }
    saveCsv(`${fileStem(slot.spec.title)}.csv`, out.join('\n') + '\n');
  }
}

/** The index of the first smallest of ys[0..n), -1 when none is below Infinity. The loop alone in its
 *  function: V8 optimizes it on its first call (OSR), and code after it without type feedback would
 *  deoptimize on every call. */
function argMin(ys: Float64Array, n: number): number {
  let min = Infinity,
    at = -1;
  for (let i = 0; i < n; i++)
    if (ys[i] < min) {
      min = ys[i];
      at = i;
    }
  return at;
}
