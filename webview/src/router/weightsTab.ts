// The router panel's Weights tab: what `moelab analyze` found in the weights
// themselves (not the logged routing): expert and router similarity per layer,
// norms, drift over checkpoints, distance from the dense parents, the engine's
// alarms, and for a compare of two checkpoints the tensors that changed.
// The host runs the analysis as a task and sends the JSON; this tab asks for it
// when it is first shown, so a panel opened for routing alone starts no job.
import '@vscode-elements/elements/dist/vscode-progress-ring/index.js';
import type {
  AnalysisResultMessage,
  AnalysisStatusMessage,
  Cell,
  CompareReport,
  RouterState,
  WeightLayer,
  WeightsTarget,
  WeightWarning,
} from '../protocol';
import { button, select, slider, textField } from '../shared/controls';
import { custom, el } from '../shared/dom';
import { fmtValue } from '../shared/format';
import { onThemeChange, readTheme, type ThemeColors } from '../shared/theme';
import { postToHost } from '../shared/vscodeApi';
import { colorLegend, cosineColor } from './heatmap';
import { barChart, driftChart, type DriftLine, matrixView } from './weightsCharts';

/** Router rows above this cosine are reported identical by the engine (report.py). */
const IDENTICAL_ROUTER_COSINE = 0.999;
const COMPARE_PAGE = 200;

const ROUTER_NAME: Record<'ffn' | 'attn', string> = { ffn: 'FFN', attn: 'attention' };

const WARNING_TITLES: Record<string, string> = {
  collapsed_experts: 'Collapsed experts. ',
  router_near_zero: 'Router vectors near zero. ',
  router_identical: 'Identical router vectors. ',
  parent_unavailable: 'Dense parent unavailable. ',
};

/** Pairs (i < j) whose value is above t, both orders, for outlining in a symmetric matrix. */
export function pairsAbove(m: Cell[][], t: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < m.length; i++) {
    for (let j = i + 1; j < m.length; j++) {
      const v = m[i][j];
      if (v !== null && v > t) out.push([i, j], [j, i]);
    }
  }
  return out;
}

export class WeightsApp {
  private target: WeightsTarget | null = null;
  private status: AnalysisStatusMessage | undefined;
  private result: AnalysisResultMessage | undefined;
  private requested = false;
  private visible = false;
  /** When the running state began, for the elapsed time shown (a long job must look alive). */
  private runningSince = 0;
  private ticker: ReturnType<typeof setInterval> | undefined;
  private readonly elapsed = el('span', { class: 'elapsed' });
  private theme: ThemeColors = readTheme();
  private compareFilter = '';
  private compareLimit = COMPARE_PAGE;
  private readonly toolbarSlot = el('div');
  private readonly statusBox = el('div', { class: 'analysis-status', role: 'status', 'aria-live': 'polite' });
  private readonly warningsBox = el('div', {
    class: 'warnings',
    role: 'region',
    'aria-label': 'Weight alarms',
  });
  private readonly body = el('div', { class: 'weights-body' });

  constructor(
    root: HTMLElement,
    private state: RouterState,
    private readonly persist: (patch: Partial<RouterState>) => void,
  ) {
    root.replaceChildren(this.toolbarSlot, this.statusBox, this.warningsBox, this.body);
    onThemeChange(() => {
      this.theme = readTheme();
      if (this.visible) this.render();
    });
    this.render();
  }

  /** From the panel's init: a new target drops what was shown for the old one. */
  setTarget(target: WeightsTarget | null): void {
    const same = target?.kind === this.target?.kind && target?.label === this.target?.label;
    this.target = target;
    if (!same) {
      this.result = undefined;
      this.status = undefined;
      this.requested = false;
      this.compareFilter = '';
      this.compareLimit = COMPARE_PAGE;
    }
    if (this.visible) this.request(false);
    this.render();
  }

  setVisible(visible: boolean): void {
    this.visible = visible;
    if (visible) {
      this.request(false);
      this.render();
    }
  }

  handle(message: AnalysisStatusMessage | AnalysisResultMessage): void {
    // A job for a target shown earlier may end after the panel moved on: not ours any more.
    const t = message.target;
    if (t && this.target && (t.kind !== this.target.kind || t.label !== this.target.label)) return;
    if (message.type === 'analysisStatus') {
      if (message.state === 'running' && this.status?.state !== 'running') this.runningSince = Date.now();
      this.status = message;
    } else {
      this.result = message;
      this.status = undefined;
    }
    this.tick();
    if (message.target) this.target = message.target;
    this.render();
  }

  /** Updates the elapsed time each second while a job runs, and only then. */
  private tick(): void {
    const running = this.status?.state === 'running';
    if (running && !this.ticker) this.ticker = setInterval(() => this.tick(), 1000);
    if (!running && this.ticker) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
    const s = Math.round((Date.now() - this.runningSince) / 1000);
    this.elapsed.textContent = running ? (s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`) : '';
  }

  /** Once per target unless forced: the host answers from its cache or starts the task. */
  private request(force: boolean): void {
    if (this.requested && !force) return;
    this.requested = true;
    postToHost({ type: 'requestAnalysis', force });
  }

  private update(patch: Partial<RouterState>): void {
    this.state = { ...this.state, ...patch };
    this.persist(patch);
    this.render();
  }

  // ---- which layer, router and matrix -------------------------------------------------------

  private layers(): number[] {
    return [...new Set(this.result?.report.layers.map((l) => l.layer) ?? [])].sort((a, b) => a - b);
  }

  private warningsAt(layer: number, router?: 'ffn' | 'attn'): WeightWarning[] {
    return (this.result?.report.warnings ?? []).filter(
      (w) => w.layer === layer && (router === undefined || w.router === router),
    );
  }

  /** The layer entry shown: the saved choice if it exists, else the first one with an alarm, else the first. */
  private current(): WeightLayer | undefined {
    const all = this.result?.report.layers ?? [];
    if (!all.length) return undefined;
    const { weightsLayer: layer, weightsRouter: router } = this.state;
    const exact = all.find((l) => l.layer === layer && l.router === router);
    if (exact) return exact;
    const sameLayer = all.find((l) => l.layer === layer);
    if (sameLayer) return sameLayer;
    const alarmed = this.result?.report.warnings.find(
      (w) => w.layer !== null && w.kind !== 'parent_unavailable',
    );
    return all.find((l) => l.layer === alarmed?.layer && l.router === alarmed?.router) ?? all[0];
  }

  private matrixOf(entry: WeightLayer): string | undefined {
    const names = Object.keys(entry.expert_cosine);
    return names.includes(this.state.weightsMatrix ?? '') ? this.state.weightsMatrix : names[0];
  }

  // ---- rendering ----------------------------------------------------------------------------

  private render(): void {
    const t0 = performance.now();
    this.renderToolbar();
    this.renderStatus();
    this.renderWarnings();
    this.renderBody();
    // Exposed for the tests' timing, like the dashboard's draw time.
    document.body.dataset.weightsRenderMs = (performance.now() - t0).toFixed(1);
    document.body.dataset.weightsRendered = String(Date.now());
  }

  private renderToolbar(): void {
    const entry = this.current();
    const controls: HTMLElement[] = [];
    if (entry && this.result) {
      const layers = this.layers();
      const idx = Math.max(0, layers.indexOf(entry.layer));
      controls.push(
        slider(
          'Layer',
          0,
          Math.max(0, layers.length - 1),
          1,
          idx,
          (i) => {
            const l = layers[i];
            const n = l === undefined ? 0 : this.warningsAt(l).length;
            return l === undefined ? '–' : `${l}${n ? ` (${n} alarm${n > 1 ? 's' : ''})` : ''}`;
          },
          (i) => this.update({ weightsLayer: layers[i] }),
        ),
      );
      const routers = this.result.report.layers.filter((l) => l.layer === entry.layer).map((l) => l.router);
      controls.push(
        select<'ffn' | 'attn'>(
          'Router',
          routers.map((r) => ({ value: r, label: ROUTER_NAME[r] })),
          entry.router,
          (v) => this.update({ weightsLayer: entry.layer, weightsRouter: v }),
        ),
      );
      const matrix = this.matrixOf(entry);
      const names = Object.keys(entry.expert_cosine);
      if (matrix)
        controls.push(
          select(
            'Expert matrix',
            names.map((m) => ({ value: m, label: m })),
            matrix,
            (v) => this.update({ weightsMatrix: v }),
          ),
        );
    }
    const running = this.status?.state === 'running';
    if (this.target && (this.result || this.status?.state === 'failed')) {
      const again = button('Analyze again', () => this.request(true), {
        title: 'Run moelab analyze again (for example after new checkpoints)',
      });
      if (running) again.setAttribute('disabled', '');
      controls.push(el('div', { class: 'control control-button' }, [again]));
    }
    this.toolbarSlot.replaceChildren(
      controls.length
        ? el('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Weights options' }, controls)
        : '',
    );
  }

  private renderStatus(): void {
    const s = this.status;
    const r = this.result;
    const items: (Node | string)[] = [];
    if (s?.state === 'running') {
      const job = s.job && s.job.count > 1 ? ` (job ${s.job.index} of ${s.job.count})` : '';
      items.push(
        el('div', { class: 'analysis-running' }, [
          custom('vscode-progress-ring', { 'aria-label': 'Analysis running' }),
          el('span', { text: `${s.detail}${job}` }),
          this.elapsed,
        ]),
      );
    } else if (s?.state === 'failed') {
      items.push(
        el('div', { class: 'warning collapse', role: 'alert' }, [
          el('strong', { text: 'Analysis failed. ' }),
          s.detail,
        ]),
      );
    }
    if (r) {
      const cks = r.report.checkpoints;
      const steps = cks.map((c) => c.step).filter((x): x is number => x !== null);
      const span =
        steps.length > 1
          ? ` (steps ${steps[0]}–${steps[steps.length - 1]})`
          : steps.length
            ? ` (step ${steps[0]})`
            : '';
      const when = new Date(r.writtenAt).toLocaleString();
      const bits = [
        `${r.target.label}: ${cks.length} checkpoint${cks.length > 1 ? 's' : ''}${span}`,
        r.report.method ? `method ${r.report.method}` : '',
        `collapse threshold ${r.report.threshold}`,
        r.cached ? `cached result from ${when}` : `analyzed ${when}`,
      ].filter(Boolean);
      items.push(
        el('div', {
          class: 'note analysis-summary',
          title: cks.map((c) => c.path).join('\n'),
          text: bits.join(' · '),
        }),
      );
    }
    this.statusBox.replaceChildren(...items);
  }

  private renderWarnings(): void {
    const ws = this.result?.report.warnings ?? [];
    const kinds = [...new Set(ws.map((w) => w.kind))];
    const order = (k: string): number =>
      ['collapsed_experts', 'router_near_zero', 'router_identical'].indexOf(k) >>> 0;
    kinds.sort((a, b) => order(a) - order(b));
    const items = kinds.map((kind) => {
      const of = ws.filter((w) => w.kind === kind);
      const list = el(
        'ul',
        { class: 'warning-list' },
        of.slice(0, 8).map((w) => {
          const li = el('li', {}, [w.message]);
          if (w.layer !== null && w.router !== null) {
            const layer = w.layer;
            const router = w.router;
            li.append(
              ' ',
              el('button', {
                class: 'link-button',
                type: 'button',
                text: `Show layer ${layer} ${ROUTER_NAME[router]}`,
              }),
            );
            li.lastElementChild?.addEventListener('click', () =>
              this.update({ weightsLayer: layer, weightsRouter: router }),
            );
          }
          return li;
        }),
      );
      if (of.length > 8) list.append(el('li', { class: 'muted', text: `… and ${of.length - 8} more` }));
      const cls = kind === 'collapsed_experts' ? 'collapse' : kind === 'parent_unavailable' ? 'info' : 'dead';
      return el(
        'div',
        {
          class: `warning ${cls}`,
          role: kind === 'parent_unavailable' ? 'note' : 'alert',
          'data-kind': kind,
        },
        [el('strong', { text: WARNING_TITLES[kind] ?? `${kind}. ` }), list],
      );
    });
    this.warningsBox.replaceChildren(...items);
  }

  private renderBody(): void {
    const r = this.result;
    if (!r) {
      const s = this.status;
      let text =
        'Open the router panel on a run or a checkpoint (Checkpoints view: Open Checkpoint in Router Panel) to analyze its expert and router weights.';
      if (s?.state === 'unavailable' || s?.state === 'none') text = s.detail;
      else if (s?.state === 'running')
        text =
          'The analysis reads every expert matrix once, in chunks; the results appear here when the task ends.';
      else if (s?.state === 'failed') text = 'No result to show.';
      else if (this.target) text = `Looking for an analysis of ${this.target.label}…`;
      this.body.replaceChildren(el('div', { class: 'empty-state', text }));
      return;
    }
    const entry = this.current();
    const parts: HTMLElement[] = [];
    if (r.compare) parts.push(this.compareCard(r.compare));
    if (!entry) {
      parts.unshift(
        el('div', {
          class: 'empty-state',
          text: 'The checkpoints have no MoE layer: there are no experts or routers to compare.',
        }),
      );
      this.body.replaceChildren(...parts);
      return;
    }
    const where = `Layer ${entry.layer} · ${ROUTER_NAME[entry.router]} router · ${entry.num_experts} experts`;
    parts.unshift(
      el('h2', { class: 'section-title', text: where }),
      el('div', { class: 'weights-grid' }, this.layerCards(entry, r)),
    );
    this.body.replaceChildren(...parts);
  }

  private layerCards(entry: WeightLayer, r: AnalysisResultMessage): HTMLElement[] {
    const report = r.report;
    const t = this.theme;
    const color = cosineColor(t);
    const legend = (): HTMLElement => colorLegend(color, -1, 1, ['cosine −1', '0', '+1']);
    const matrix = this.matrixOf(entry) ?? '';
    const cos = entry.expert_cosine[matrix] ?? [];
    const threshold = report.threshold;
    const collapsed = new Set(
      this.warningsAt(entry.layer, entry.router)
        .filter((w) => w.kind === 'collapsed_experts')
        .flatMap((w) => w.experts),
    );
    const nearZero = new Set(
      entry.router_norms.flatMap((v, i) => (v !== null && v < report.router_eps ? [i] : [])),
    );
    const eps = report.router_eps.toExponential();
    const last = report.checkpoints[report.checkpoints.length - 1];
    const at = last.step !== null ? ` at step ${last.step}` : '';
    const describe = (what: string, t0: number, flagged: string) => (i: number, j: number, v: Cell) =>
      `expert ${i} × expert ${j} · ${what} ${v === null ? 'undefined (a zero vector)' : fmtValue(v)}${v !== null && i !== j && v > t0 ? ` · ${flagged}` : ''}`;

    const cards: HTMLElement[] = [
      el('div', { class: 'card', 'data-card': 'expert-similarity' }, [
        el('h3', { text: `Expert similarity (${matrix})${at}` }),
        el('p', {
          class: 'note',
          text: `Cosine of the flattened ${matrix} weights; outlined: above the collapse threshold ${threshold}.`,
        }),
        matrixView({
          label: `Cosine similarity of the experts' ${matrix} weights`,
          matrix: cos,
          color,
          theme: t,
          marks: pairsAbove(cos, threshold),
          describe: describe('cosine', threshold, `above ${threshold}`),
        }),
        legend(),
      ]),
      el('div', { class: 'card', 'data-card': 'router-similarity' }, [
        el('h3', { text: `Router vector similarity${at}` }),
        el('p', {
          class: 'note',
          text: `Cosine of the router rows; outlined: identical (above ${IDENTICAL_ROUTER_COSINE}); blank: a zero row.`,
        }),
        matrixView({
          label: 'Cosine similarity of the router vectors',
          matrix: entry.router_cosine,
          color,
          theme: t,
          marks: pairsAbove(entry.router_cosine, IDENTICAL_ROUTER_COSINE),
          describe: describe('cosine', IDENTICAL_ROUTER_COSINE, 'identical'),
        }),
        legend(),
      ]),
      el('div', { class: 'card', 'data-card': 'expert-norms' }, [
        el('h3', { text: `Expert norms (‖${matrix}‖)` }),
        barChart({
          label: `Frobenius norm of each expert's ${matrix}`,
          values: entry.expert_norms[matrix] ?? [],
          theme: t,
          flagged: collapsed,
          yLabel: 'norm',
        }),
        el('p', {
          class: 'note',
          text: collapsed.size
            ? `Red: experts that collapsed onto another (${[...collapsed].join(', ')}).`
            : 'Equal norms with low similarity: experts of one size that point in different directions.',
        }),
      ]),
      el('div', { class: 'card', 'data-card': 'router-norms' }, [
        el('h3', { text: 'Router vector norms' }),
        barChart({
          label: "Norm of each expert's router vector",
          values: entry.router_norms,
          theme: t,
          flagged: nearZero,
          yLabel: 'norm',
        }),
        el('p', {
          class: 'note',
          text: nearZero.size
            ? `Red: near zero (norm below ${eps}): expert${nearZero.size > 1 ? 's' : ''} ${[...nearZero].join(', ')} get${nearZero.size > 1 ? '' : 's'} no routing signal.`
            : `No router vector has a norm below ${eps}.`,
        }),
      ]),
    ];

    const d = entry.drift;
    if (d.steps.length > 1) {
      const lines: DriftLine[] = d.experts.map((vals, e) => ({
        label: `expert ${e}`,
        color: t.series[e % t.series.length],
        values: vals,
      }));
      lines.push({ label: 'router', color: t.foreground, values: d.router, dashed: true });
      cards.push(
        el('div', { class: 'card', 'data-card': 'drift' }, [
          el('h3', { text: 'Drift from the first checkpoint' }),
          driftChart(
            'Relative distance of each expert from its weights at the first checkpoint',
            d.steps,
            lines,
          ),
        ]),
      );
    } else {
      cards.push(
        el('div', { class: 'card', 'data-card': 'drift' }, [
          el('h3', { text: 'Drift from the first checkpoint' }),
          el('p', {
            class: 'note',
            text: 'Drift needs two checkpoints or more: open the panel on a run, or compare two checkpoints.',
          }),
        ]),
      );
    }

    if (entry.parent_distance.some((v) => v !== null)) {
      cards.push(
        el('div', { class: 'card', 'data-card': 'parents' }, [
          el('h3', { text: 'Distance from the dense parent' }),
          barChart({
            label: 'Relative distance of each expert from the dense matrix it was copied from',
            values: entry.parent_distance,
            theme: t,
            yLabel: '‖W − P‖ / ‖P‖',
          }),
          el('p', {
            class: 'note',
            text: 'How far each expert moved from the dense checkpoint it was upcycled from (0: still a copy).',
          }),
        ]),
      );
    }
    return cards;
  }

  private compareCard(c: CompareReport): HTMLElement {
    const head = el('div', { class: 'compare-head' }, [
      el('h3', { text: `Tensors that differ: ${c.num_changed} of ${c.num_tensors}` }),
      el('p', {
        class: 'note',
        text: `A ${c.a}  →  B ${c.b}. Relative change ‖B − A‖ / ‖A‖, largest first.`,
      }),
    ]);
    if (!c.tensors.length)
      return el('div', { class: 'card compare', 'data-card': 'compare' }, [
        head,
        el('p', { class: 'note', text: 'Every tensor holds the same values in both checkpoints.' }),
      ]);
    const finite = c.tensors.map((x) => x.rel_change).filter((v): v is number => v !== null);
    const maxRel = Math.max(1e-12, ...finite);
    const tableSlot = el('div', { class: 'table-scroll' });
    const footSlot = el('div');
    // Only the table is redrawn while typing, so the filter field keeps its focus.
    const fill = (): void => {
      const filter = this.compareFilter.toLowerCase();
      const shown = c.tensors.filter((x) => !filter || x.name.toLowerCase().includes(filter));
      const rows = shown.slice(0, this.compareLimit).map((x) => {
        const bar = el('span', { class: 'rel-bar' });
        bar.style.width = `${x.rel_change === null ? 100 : Math.max(1, (x.rel_change / maxRel) * 100)}%`;
        const rel = x.rel_change === null ? '∞ (A is zero)' : fmtValue(x.rel_change);
        return el('tr', {}, [
          el('th', { scope: 'row', class: 'tensor-name', text: x.name, title: x.name }),
          el('td', { text: `[${x.shape.join(', ')}]` }),
          el('td', { text: x.dtype_a === x.dtype_b ? x.dtype_a : `${x.dtype_a} → ${x.dtype_b}` }),
          el('td', { class: 'rel-cell' }, [
            el('span', { class: 'rel-track' }, [bar]),
            el('span', { text: rel }),
          ]),
          el('td', { text: x.abs_change === null ? '–' : fmtValue(x.abs_change) }),
        ]);
      });
      tableSlot.replaceChildren(
        el('table', { class: 'summary compare-table' }, [
          el('thead', {}, [
            el(
              'tr',
              {},
              ['Tensor', 'Shape', 'dtype', 'Relative change', '‖B − A‖'].map((h) =>
                el('th', { scope: 'col', text: h }),
              ),
            ),
          ]),
          el('tbody', {}, rows),
        ]),
      );
      footSlot.replaceChildren(
        shown.length > this.compareLimit
          ? button(`Show all ${shown.length}`, () => {
              this.compareLimit = Number.POSITIVE_INFINITY;
              fill();
            })
          : el('span', { class: 'note', text: filter ? `${shown.length} matching` : '' }),
      );
    };
    const filterField = textField('Filter tensors', this.compareFilter, 'e.g. experts.3 or gate', (v) => {
      this.compareFilter = v;
      this.compareLimit = COMPARE_PAGE;
      fill();
    });
    fill();
    return el('div', { class: 'card compare', 'data-card': 'compare' }, [
      head,
      el('div', { class: 'toolbar-inline' }, [filterField]),
      tableSlot,
      footSlot,
    ]);
  }
}
