// The router panel: warnings, aggregated overview per run (all layers at once),
// and a virtualized list with one row per (layer, router): expert load over
// steps, the domain × expert matrix at the chosen step, and for BAM's soft
// attention router the distribution of its weights per expert.
import type { HostToRouterMessage, RouterState, RouterWarning, RoutingBlock, RunSummary } from '../protocol';
import { select, slider, textField } from '../shared/controls';
import { el } from '../shared/dom';
import { fmtValue } from '../shared/format';
import { onThemeChange, readTheme, type ThemeColors } from '../shared/theme';
import { postToHost, saveState } from '../shared/vscodeApi';
import { colorLegend, drawMatrix, shareColor, utilizationColor, withAxes } from './heatmap';
import { miniChart, type MiniLine } from './miniChart';
import { entryAt, RunRouting, type Entry, type LayerSeries } from './routingStore';
import { DEAD_RULE, deadExperts, quantiles, utilization } from './routingStats';
import { VirtualList } from './virtualList';

// Room for the axes of the three heatmaps and, on attention rows, the soft-router box plot.
const ROW_HEIGHT = 240;
/** The engine's MAX_COACT_EXPERTS: larger routers log no co-activation. */
const COACT_MAX_EXPERTS = 64;

export function defaultRouterState(): RouterState {
  return { panel: 'router', runIds: [], runA: '', runB: '', router: 'all', layerFilter: '', step: -1 };
}

/** Why a router has no co-activation matrix (the engine's rule in train/evaluate.py). */
export function coactAbsence(s: LayerSeries): string {
  const e = s.entries[s.entries.length - 1]?.row.load.length ?? 0;
  if (e > COACT_MAX_EXPERTS)
    return `No co-activation: logged for at most ${COACT_MAX_EXPERTS} experts (this router has ${e}).`;
  if (s.router === 'attn') return 'No co-activation: a soft router uses every expert.';
  return "No co-activation in this run's routing.jsonl (older engine, or no top-k).";
}

/** "0-7, 12" → {0..7, 12}; empty or unparsable → every layer. */
export function parseLayerFilter(text: string): (layer: number) => boolean {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const ranges: [number, number][] = [];
  for (const p of parts) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    if (m) ranges.push([Number(m[1]), Number(m[2] ?? m[1])]);
  }
  if (!ranges.length) return () => true;
  return (layer) => ranges.some(([a, b]) => layer >= a && layer <= b);
}

export class RouterApp {
  private runs: RunSummary[] = [];
  private routing = new Map<string, RunRouting>();
  private theme: ThemeColors = readTheme();
  private readonly toolbarSlot = el('div');
  private readonly warningsBox = el('div', {
    class: 'warnings',
    role: 'region',
    'aria-label': 'Router warnings',
  });
  private readonly overview = el('div', { class: 'overview' });
  private readonly list: VirtualList;
  private readonly empty = el('div', {
    class: 'empty-state',
    text: 'No routing data yet. MoE runs write routing.jsonl as they train; it shows here as it arrives.',
  });
  private keys: string[] = [];
  private posted = new Set<string>();
  private framePending = false;

  constructor(
    root: HTMLElement,
    private state: RouterState,
    /** The panel's state also holds the Weights tab's fields: save patches, not our copy. */
    private readonly persist: (patch: Partial<RouterState>) => void = (patch) =>
      saveState({ ...this.state, ...patch }),
  ) {
    this.list = new VirtualList(ROW_HEIGHT, (i) => this.renderRow(i), 'MoE layers');
    root.replaceChildren(
      this.toolbarSlot,
      this.warningsBox,
      this.empty,
      el('h2', { class: 'section-title', text: 'Overview (all layers)' }),
      this.overview,
      el('h2', { class: 'section-title', text: 'Layers' }),
      this.list.root,
    );
    onThemeChange(() => {
      this.theme = readTheme();
      this.schedule();
    });
  }

  handle(message: HostToRouterMessage): void {
    switch (message.type) {
      case 'init':
        this.runs = message.runs;
        this.routing = new Map();
        this.ingest(message.routing);
        this.update({ runIds: message.runIds });
        this.pickRuns();
        this.renderToolbar();
        break;
      case 'runs':
        this.runs = message.runs;
        this.renderToolbar();
        break;
      case 'appendRouting': {
        const before = this.routing.size;
        this.ingest(message.routing);
        if (this.routing.size !== before) {
          this.pickRuns();
          this.renderToolbar();
        }
        break;
      }
    }
    this.schedule();
  }

  private ingest(blocks: readonly RoutingBlock[]): void {
    for (const b of blocks) {
      const run = this.runRouting(b.runId);
      run.append(b.rows);
      if (b.saturation) run.mergeSaturation(b.saturation);
    }
  }

  private runRouting(runId: string): RunRouting {
    let r = this.routing.get(runId);
    if (!r) {
      r = new RunRouting(runId);
      this.routing.set(runId, r);
    }
    return r;
  }

  /** Default to the first one or two runs the panel was opened with. */
  private pickRuns(): void {
    const ids = [...this.routing.keys()];
    const preferred = [...this.state.runIds.filter((id) => this.routing.has(id)), ...ids];
    if (!this.routing.has(this.state.runA)) this.update({ runA: preferred[0] ?? '' });
    if (this.state.runB && !this.routing.has(this.state.runB)) this.update({ runB: '' });
    if (!this.state.runB && this.state.runIds.length > 1) {
      const b = preferred.find((id) => id !== this.state.runA);
      if (b) this.update({ runB: b });
    }
  }

  private update(patch: Partial<RouterState>): void {
    this.state = { ...this.state, ...patch };
    this.persist(patch);
  }

  private nameOf(runId: string): string {
    return this.runs.find((r) => r.id === runId)?.name ?? runId;
  }

  private shownRuns(): RunRouting[] {
    return [this.state.runA, this.state.runB]
      .filter((id, i, a) => id && a.indexOf(id) === i)
      .map((id) => this.routing.get(id))
      .filter((r): r is RunRouting => !!r);
  }

  private steps(): number[] {
    return [...new Set(this.shownRuns().flatMap((r) => r.steps()))].sort((a, b) => a - b);
  }

  private chosenStep(): number {
    const steps = this.steps();
    if (this.state.step < 0 || !steps.includes(this.state.step)) return steps[steps.length - 1] ?? 0;
    return this.state.step;
  }

  private renderToolbar(): void {
    const ids = [...this.routing.keys()];
    const runOptions = ids.map((id) => ({ value: id, label: this.nameOf(id) }));
    const steps = this.steps();
    const idx = this.state.step < 0 ? steps.length - 1 : Math.max(0, steps.indexOf(this.chosenStep()));
    this.toolbarSlot.replaceChildren(
      el('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Router panel options' }, [
        select('Run', runOptions, this.state.runA, (v) => this.change({ runA: v })),
        select('Compare with', [{ value: '', label: '— none —' }, ...runOptions], this.state.runB, (v) =>
          this.change({ runB: v }),
        ),
        select<RouterState['router']>(
          'Router',
          [
            { value: 'all', label: 'FFN and attention' },
            { value: 'ffn', label: 'FFN' },
            { value: 'attn', label: 'Attention' },
          ],
          this.state.router,
          (v) => this.change({ router: v }),
        ),
        textField('Layers', this.state.layerFilter, 'e.g. 0-7, 12', (v) => this.change({ layerFilter: v })),
        slider(
          'Step (domain × expert, co-activation)',
          0,
          Math.max(0, steps.length - 1),
          1,
          Math.max(0, idx),
          (i) => {
            const s = steps[i];
            return s === undefined ? '–' : `${s}${i === steps.length - 1 ? ' (latest)' : ''}`;
          },
          (i) => this.change({ step: i >= steps.length - 1 ? -1 : steps[i] }),
        ),
      ]),
    );
  }

  private change(patch: Partial<RouterState>): void {
    const runsChanged = patch.runA !== undefined || patch.runB !== undefined;
    this.update(patch);
    if (runsChanged) this.renderToolbar();
    this.schedule();
  }

  private schedule(): void {
    if (this.framePending) return;
    this.framePending = true;
    requestAnimationFrame(() => {
      this.framePending = false;
      this.render();
    });
  }

  private render(): void {
    this.empty.hidden = this.routing.size > 0;
    this.renderWarnings();
    this.renderOverview();
    const filter = parseLayerFilter(this.state.layerFilter);
    const keys = new Set<string>();
    for (const r of this.shownRuns()) {
      for (const [key, s] of r.layers) {
        if (this.state.router !== 'all' && s.router !== this.state.router) continue;
        if (filter(s.layer)) keys.add(key);
      }
    }
    this.keys = [...keys].sort((a, b) => this.layerOf(a) - this.layerOf(b) || a.localeCompare(b));
    this.list.setCount(this.keys.length);
    document.body.dataset.rendered = String(Date.now());
  }

  private layerOf(key: string): number {
    return Number(key.split(':')[1]);
  }

  private renderWarnings(): void {
    const all: RouterWarning[] = [...this.routing.values()].flatMap((r) => r.warnings());
    const fresh = all.filter((w) => {
      const k = `${w.runId}|${w.kind}|${w.layer}|${w.router}`;
      if (this.posted.has(k)) return false;
      this.posted.add(k);
      return true;
    });
    // The host turns these into one VS Code notification per run.
    if (fresh.length) postToHost({ type: 'routerWarnings', warnings: fresh });
    const shown = new Set(this.shownRuns().map((r) => r.runId));
    const visible = all.filter((w) => shown.has(w.runId));
    const byKind = (kind: string): RouterWarning[] => visible.filter((w) => w.kind === kind);
    const items: HTMLElement[] = [];
    for (const kind of ['collapse', 'dead'] as const) {
      const ws = byKind(kind);
      if (!ws.length) continue;
      const head = ws.slice(0, 6).map((w) => `${this.nameOf(w.runId)}: ${w.message}`);
      const more = ws.length > 6 ? ` … and ${ws.length - 6} more` : '';
      items.push(
        el('div', { class: `warning ${kind}`, role: 'alert' }, [
          el('strong', { text: kind === 'dead' ? 'Dead experts. ' : 'Router collapse. ' }),
          head.join('; ') + more,
        ]),
      );
    }
    this.warningsBox.replaceChildren(...items);
  }

  private renderOverview(): void {
    const step = this.chosenStep();
    const util = utilizationColor(this.theme);
    const columns = this.shownRuns().map((run) => {
      const keys = run
        .keys()
        .filter(
          (k) => this.state.router === 'all' || k.startsWith(this.state.router === 'attn' ? '1:' : '0:'),
        );
      const e = run.maxExperts();
      const heat = el('canvas', {
        class: 'heat',
        'aria-label': `Utilization of every expert in every layer at step ${step}`,
      });
      // 12 px a row leaves room for the layer labels; tall models get every few layers labelled.
      heat.style.height = `${Math.min(320, Math.max(60, keys.length * 12))}px`;
      const rows = keys.map((k) => {
        const s = run.layers.get(k);
        const entry = s ? entryAt(s, step) : undefined;
        return entry ? utilization(entry.row.load) : [];
      });
      drawMatrix(heat, keys.length, e, (r, c) => rows[r][c] ?? NaN, util);
      const routerNames = keys.map((k) => {
        const ls = run.layers.get(k);
        return ls ? `L${ls.layer}${ls.router === 'attn' ? ' attn' : ''}` : k;
      });
      const experts = Array.from({ length: e }, (_, i) => String(i));
      const heatView = withAxes(heat, keys.length, e, {
        yLabel: 'layer',
        xLabel: 'expert',
        yTicks: routerNames,
        xTicks: experts,
        describe: (r, c) => `${routerNames[r]} · expert ${c} · utilization ${fmtValue(rows[r]?.[c] ?? NaN)}`,
      });
      const kinds = (['ffn', 'attn'] as const).filter((k) =>
        keys.some((key) => run.layers.get(key)?.router === k),
      );
      // Mean over layers per logged step, in one pass over every record.
      const series = (pick: (en: Entry) => number | undefined): MiniLine[] =>
        kinds.map((kind, i) => {
          const acc = new Map<number, [number, number]>();
          for (const k of keys) {
            const s = run.layers.get(k);
            if (s?.router !== kind) continue;
            for (const en of s.entries) {
              const v = pick(en);
              if (v === undefined || !Number.isFinite(v)) continue;
              const a = acc.get(en.row.step) ?? [0, 0];
              acc.set(en.row.step, [a[0] + v, a[1] + 1]);
            }
          }
          const points = [...acc]
            .sort((a, b) => a[0] - b[0])
            .map(([st, [sum, n]]) => [st, sum / n] as [number, number]);
          return { label: kind === 'ffn' ? 'FFN' : 'attention', color: this.theme.series[i], points };
        });
      const saturation = run.perToken.saturation
        ? miniChart(
            'Router saturation over steps',
            series((en) => en.row.saturation),
            [0, 1],
          )
        : el('p', {
            class: 'note empty-note',
            text: "Router saturation (OLMoE) compares each token's top-k experts at a step with its top-k at the final step, on a fixed probe batch. The engine writes it when training finishes (top-k routers only), so it shows here once this run is done.",
          });
      return el('div', { class: 'overview-run' }, [
        el('div', { class: 'card' }, [
          el('h3', { text: `${this.nameOf(run.runId)} · utilization at step ${step}` }),
          el('p', {
            class: 'note',
            text: `${keys.length} routers (rows: FFN layers, then attention layers) × ${e} experts`,
          }),
          heatView,
          colorLegend(util, 1 / 8, 8, ['starved', 'fair share', 'overloaded']),
        ]),
        el('div', { class: 'card' }, [
          el('h3', { text: 'Imbalance (mean coefficient of variation over layers)' }),
          miniChart(
            'Imbalance over steps',
            series((en) => en.cv),
          ),
        ]),
        el('div', { class: 'card' }, [
          el('h3', { text: 'Specialization (domain–expert mutual information, normalized)' }),
          miniChart(
            'Specialization over steps',
            series((en) => en.specialization),
            [0, 1],
          ),
        ]),
        el('div', { class: 'card', 'data-card': 'saturation' }, [
          el('h3', { text: 'Router saturation' }),
          saturation,
        ]),
      ]);
    });
    this.overview.replaceChildren(...columns);
  }

  private renderRow(index: number): HTMLElement {
    const key = this.keys[index];
    const runs = this.shownRuns();
    const row = el('div', { class: `layer-row${runs.length > 1 ? ' two' : ''}` });
    row.dataset.key = key;
    for (const run of runs) {
      const s = run.layers.get(key);
      row.append(
        s
          ? this.renderCell(run, s)
          : el('div', { class: 'note', text: `${this.nameOf(run.runId)} has no router here.` }),
      );
    }
    return row;
  }

  private renderCell(run: RunRouting, s: LayerSeries): HTMLElement {
    const step = this.chosenStep();
    const entry = entryAt(s, step);
    const last = s.entries[s.entries.length - 1];
    const e = last?.row.load.length ?? 0;
    const dead = deadExperts(s.entries.map((en) => en.row.load)).length;
    const stats = el('span', { class: 'layer-stats' }, [
      `CV ${fmtValue(last?.cv ?? NaN)} · max/mean ${fmtValue(last?.maxOverMean ?? NaN)} · `,
      el('span', { class: dead ? 'bad' : '', text: `${dead} dead`, title: `An expert is ${DEAD_RULE}.` }),
    ]);
    const title = el('div', { class: 'layer-title' }, [
      el('strong', { text: `Layer ${s.layer} · ${s.router === 'attn' ? 'attention' : 'FFN'}` }),
      el('span', { class: 'muted', text: this.nameOf(run.runId) }),
      stats,
    ]);

    // Expert load over steps: x = logged step, y = expert.
    const heat = el('canvas', {
      class: 'heat',
      'aria-label': `Utilization per expert over steps, layer ${s.layer}`,
    });
    heat.style.height = '120px';
    const util = utilizationColor(this.theme);
    const utilRows = s.entries.map((en) => utilization(en.row.load));
    drawMatrix(heat, e, s.entries.length, (r, c) => utilRows[c]?.[r] ?? NaN, util);
    const readout = el('div', {
      class: 'hover-readout',
      text: `${s.entries.length} logged steps × ${e} experts`,
    });
    const heatView = withAxes(heat, e, s.entries.length, {
      yLabel: 'expert',
      xLabel: 'step',
      yTicks: Array.from({ length: e }, (_, i) => String(i)),
      xTicks: s.entries.map((en) => String(en.row.step)),
      readout,
      describe: (r, c) => {
        const en = s.entries[c];
        return en
          ? `step ${en.row.step} · expert ${r} · load ${fmtValue(en.row.load[r])} · utilization ${fmtValue(utilRows[c][r])}`
          : '';
      },
    });

    // Domain × expert at the chosen step.
    const domains = Object.keys(entry?.row.by_domain ?? {});
    const matrix = el('canvas', {
      class: 'heat',
      'aria-label': `Domain by expert routing at step ${entry?.row.step ?? step}`,
    });
    matrix.style.height = `${Math.max(24, domains.length * 18)}px`;
    const shares = domains.map((d) => {
      const v = entry?.row.by_domain?.[d] ?? [];
      const sum = v.reduce((a, b) => a + b, 0) || 1;
      return v.map((x) => x / sum);
    });
    const maxShare = Math.max(0, ...shares.flat());
    drawMatrix(matrix, domains.length, e, (r, c) => shares[r]?.[c] ?? NaN, shareColor(this.theme, maxShare));
    const domainBox = domains.length
      ? el('div', {}, [
          el('div', {
            class: 'note',
            text: `Domain × expert at step ${entry?.row.step} (rows: ${domains.join(', ')})`,
          }),
          withAxes(matrix, domains.length, e, {
            yLabel: 'domain',
            xLabel: 'expert',
            yTicks: domains,
            xTicks: Array.from({ length: e }, (_, i) => String(i)),
            describe: (r, c) => `${domains[r]} · expert ${c} · share ${fmtValue(shares[r]?.[c] ?? NaN)}`,
          }),
          el('div', { class: 'note', text: `specialization ${fmtValue(entry?.specialization ?? NaN)}` }),
        ])
      : el('div', { class: 'note', text: 'No per-domain routing in this record.' });

    const right = el('div', {}, [domainBox]);
    if (s.router === 'attn') right.append(this.probDistribution(s));
    return el('div', {}, [
      title,
      el('div', { class: 'layer-cell' }, [
        el('div', {}, [heatView, readout]),
        right,
        this.coactivation(s, entry),
      ]),
    ]);
  }

  /** P(b | a) at the chosen step: rows a, columns b; the diagonal (always 1) is left blank so the rest keeps its contrast. */
  private coactivation(s: LayerSeries, entry: Entry | undefined): HTMLElement {
    const m = entry?.row.coact;
    if (!entry || !m)
      return el('div', { class: 'coact-box note', 'data-coact': 'absent', text: coactAbsence(s) });
    const e = m.length;
    let max = 0;
    for (let a = 0; a < e; a++) for (let b = 0; b < e; b++) if (a !== b) max = Math.max(max, m[a][b]);
    const color = shareColor(this.theme, max);
    const canvas = el('canvas', {
      class: 'heat coact',
      'aria-label': `Expert co-activation P(b | a) at step ${entry.row.step}, layer ${s.layer}: rows a, columns b`,
    });
    const readout = el('div', { class: 'hover-readout', text: `${e} × ${e} experts` });
    drawMatrix(canvas, e, e, (a, b) => (a === b ? NaN : m[a][b]), color);
    const experts = Array.from({ length: e }, (_, i) => String(i));
    const view = withAxes(canvas, e, e, {
      yLabel: 'expert a',
      xLabel: 'expert b',
      yTicks: experts,
      xTicks: experts,
      readout,
      describe: (a, b) => `P(${b} | ${a}) = ${fmtValue(m[a][b])}`,
    });
    return el('div', { class: 'coact-box', 'data-coact': 'shown' }, [
      el('div', {
        class: 'note',
        title:
          'Share of the tokens routed to expert a (row) that are also routed to expert b (column); the diagonal (always 1) is blank',
        text: `Co-activation P(b | a), step ${entry.row.step}`,
      }),
      view,
      colorLegend(color, 0, max, ['0', '', fmtValue(max)]),
      readout,
    ]);
  }

  /** BAM's soft attention router: the spread over steps of each expert's mean weight. */
  private probDistribution(s: LayerSeries): HTMLElement {
    const e = s.entries[0]?.row.prob.length ?? 0;
    const q = Array.from({ length: e }, (_, i) =>
      quantiles(s.entries.map((en) => en.row.prob[i]).filter(Number.isFinite)),
    );
    const canvas = el('canvas', {
      class: 'heat',
      'aria-label': 'Distribution of soft attention-router weights per expert',
    });
    const w = 240,
      h = 48;
    canvas.width = w * 2;
    canvas.height = h * 2;
    canvas.style.height = `${h}px`;
    canvas.style.imageRendering = 'auto';
    const ctx = canvas.getContext('2d');
    const hi = Math.max(1 / Math.max(e, 1), ...q.map((x) => x.max));
    if (ctx && e) {
      ctx.scale(2, 2);
      const bw = w / e;
      const y = (v: number): number => h - 2 - (v / hi) * (h - 4);
      ctx.strokeStyle = this.theme.muted;
      ctx.setLineDash([2, 2]);
      ctx.beginPath();
      ctx.moveTo(0, y(1 / e));
      ctx.lineTo(w, y(1 / e));
      ctx.stroke();
      ctx.setLineDash([]);
      q.forEach((d, i) => {
        const cx = bw * (i + 0.5);
        ctx.strokeStyle = this.theme.series[0];
        ctx.fillStyle = this.theme.series[0];
        ctx.beginPath();
        ctx.moveTo(cx, y(d.min));
        ctx.lineTo(cx, y(d.max));
        ctx.stroke();
        ctx.globalAlpha = 0.5;
        ctx.fillRect(
          cx - Math.max(1, bw * 0.3),
          y(d.q3),
          Math.max(2, bw * 0.6),
          Math.max(1, y(d.q1) - y(d.q3)),
        );
        ctx.globalAlpha = 1;
        ctx.fillRect(cx - Math.max(1, bw * 0.35), y(d.median) - 1, Math.max(2, bw * 0.7), 2);
      });
    }
    return el('div', {}, [
      el('div', {
        class: 'note',
        text: `Soft router weight per expert over steps (box: quartiles; dashed: 1/E; max ${fmtValue(hi)})`,
      }),
      canvas,
    ]);
  }
}
