// The Results panel: the method × domain table (mean ± std over seeds, best per column marked,
// rows grouped by role), the papers' claims with their verdicts and margins beside the paper's,
// bar charts per domain with error bars, and the equal-token and equal-compute views side by
// side. Copy buttons send Markdown / LaTeX / CSV to the host, which owns the clipboard.
import { axisBottom, axisLeft, scaleBand, scaleLinear, select } from 'd3';
import type {
  ResultsClaim,
  ResultsDoc,
  ResultsMessage,
  ResultsModel,
  ResultsSetting,
  ResultsState,
  Spread,
  Verdict,
} from '../protocol';
import { el } from '../shared/dom';
import { button, select as selectControl } from '../shared/controls';
import { timed } from '../shared/perf';
import { postToHost } from '../shared/vscodeApi';
import {
  bestPerColumn,
  caption,
  columnsOf,
  fmtFlops,
  fmtMargin,
  fmtSpread,
  fmtTokens,
  groupRows,
  toCsv,
  toLatex,
  toMarkdown,
  valueColumns,
} from './resultsTable';

const VERDICT_CLASS: Record<Verdict, string> = {
  'holds in every seed': 'verdict-every',
  'holds on the mean only': 'verdict-mean',
  'does not hold': 'verdict-not',
  'not measured': 'verdict-unmeasured',
};
const VERDICT_ICON: Record<Verdict, string> = {
  'holds in every seed': '✓',
  'holds on the mean only': '≈',
  'does not hold': '✗',
  'not measured': '?',
};

export function defaultResultsState(): ResultsState {
  return { panel: 'results', file: '', setting: 0 };
}

export class ResultsApp {
  private message: ResultsMessage | undefined;
  private barObserver: IntersectionObserver | undefined;
  /** The bar charts (by column) drawn in the last render. */
  private drawnBars = new Set<string>();

  constructor(
    private readonly root: HTMLElement,
    private state: ResultsState,
    private readonly persist: (s: ResultsState) => void,
  ) {
    root.replaceChildren(el('p', { class: 'empty-state', text: 'Loading results…' }));
  }

  handle(message: ResultsMessage): void {
    if (message.file !== this.state.file) this.update({ file: message.file, setting: 0 });
    this.message = message;
    this.render();
  }

  private update(patch: Partial<ResultsState>): void {
    this.state = { ...this.state, ...patch };
    this.persist(this.state);
  }

  private render(): void {
    const m = this.message;
    if (!m) return;
    const title = el('h2', { class: 'results-title', text: `Results — ${m.label}` });
    if (!m.doc) {
      this.root.replaceChildren(
        title,
        el('p', { class: 'warning collapse', role: 'alert', text: m.error ?? 'No results.' }),
      );
      return;
    }
    const doc = m.doc;
    const index = Math.min(this.state.setting, Math.max(0, doc.settings.length - 1));
    const setting = doc.settings[index];
    if (!setting || setting.models.length === 0) {
      this.root.replaceChildren(
        title,
        el('p', {
          class: 'empty-state',
          text: 'No evaluated models in this file yet: rows fill in as eval runs finish.',
        }),
      );
      return;
    }
    this.root.replaceChildren(
      el('div', { class: 'toolbar' }, [title, ...this.toolbar(doc, setting, index)]),
      m.error ? el('p', { class: 'warning', role: 'status', text: m.error }) : '',
      el('p', { class: 'muted caption', text: caption(setting, doc.tasks) }),
      timed('results: table', () => this.table(setting, doc)),
      timed('results: claims', () => this.claims(setting)),
      el('h3', { class: 'section-title', text: 'Perplexity per domain (error bars: ± std over seeds)' }),
      timed('results: bar charts', () => this.bars(setting, doc.domains)),
      el('h3', { class: 'section-title', text: 'Equal tokens and equal compute' }),
      timed('results: budgets', () => this.budgets(setting)),
    );
  }

  private toolbar(doc: ResultsDoc, setting: ResultsSetting, index: number): HTMLElement[] {
    const items: HTMLElement[] = [];
    if (doc.settings.length > 1) {
      const options = doc.settings.map((s, i) => ({
        value: String(i),
        label: `${s.name}${s.block ? ` (${s.block})` : ''}`,
      }));
      items.push(
        selectControl('Setting', options, String(index), (v) => {
          this.update({ setting: Number(v) });
          this.render();
        }),
      );
    }
    const copy = (format: 'markdown' | 'latex' | 'csv', text: () => string) => () =>
      postToHost({ type: 'copyText', format, text: text() });
    items.push(
      el('div', { class: 'chart-actions copy-actions' }, [
        button(
          'Copy Markdown',
          copy('markdown', () => toMarkdown(setting, doc.domains, doc.tasks)),
          { title: 'Copy the table as Markdown' },
        ),
        button(
          'Copy LaTeX',
          copy('latex', () => toLatex(setting, doc.domains, doc.tasks)),
          { title: 'Copy the table as LaTeX (booktabs)' },
        ),
        button(
          'Copy CSV',
          copy('csv', () => toCsv(setting, doc.domains, doc.tasks)),
          { title: 'Copy the table as CSV' },
        ),
      ]),
    );
    return items;
  }

  private table(setting: ResultsSetting, doc: ResultsDoc): HTMLElement {
    const cols = valueColumns(doc.domains, doc.tasks);
    const best = bestPerColumn(setting.models, cols);
    const head = el('tr', {}, [
      el('th', { scope: 'col', class: 'left', text: 'model' }),
      ...cols.map((c) =>
        el('th', {
          scope: 'col',
          'data-column': c.key,
          text: c.label,
          title: c.key.startsWith('task/')
            ? `lm-eval score, ${c.higherIsBetter ? 'higher' : 'lower'} is better`
            : 'perplexity, lower is better',
        }),
      ),
    ]);
    const body: HTMLElement[] = [];
    for (const g of groupRows(setting.models)) {
      body.push(
        el('tr', { class: 'group-row' }, [
          el('th', { scope: 'rowgroup', colspan: cols.length + 1, class: 'left', text: g.title }),
        ]),
      );
      for (const m of g.models) {
        const cells = cols.map((c) => {
          const isBest = best.get(c.key)?.has(m.label) ?? false;
          const td = el('td', { class: isBest ? 'best' : undefined, title: perSeed(c.value(m)) }, [
            fmtSpread(c.value(m), c.digits),
          ]);
          if (isBest)
            td.append(el('span', { class: 'best-mark', 'aria-label': 'best in column', text: ' ★' }));
          return td;
        });
        const row = el('tr', { 'data-label': m.label, 'data-role': m.role }, [
          el('th', { scope: 'row', class: 'left' }, [swatch(m.color), m.label]),
          ...cells,
        ]);
        body.push(row);
      }
    }
    return el(
      'table',
      { class: 'summary results-table', 'aria-label': 'Perplexity and task scores per model' },
      [el('thead', {}, [head]), el('tbody', {}, body)],
    );
  }

  private claims(setting: ResultsSetting): HTMLElement {
    if (!setting.claims.length)
      return el('p', {
        class: 'muted',
        text: 'No claims: this file holds one evaluation (run the study for verdicts).',
      });
    return el('section', { class: 'claims', 'aria-label': 'Claims' }, [
      el('h3', { class: 'section-title', text: 'Claims of the papers' }),
      ...setting.claims.map(claimCard),
    ]);
  }

  /**
   * The charts sit below a table of every model: with 100 runs, off screen when the panel opens. Each
   * is sized at once (its viewBox) and drawn when it comes near the viewport, so that building and
   * laying out hundreds of bars does not hold back the table's first paint. Charts that were on
   * screen before a re-render (rows filling in) are drawn at once, so they do not blink.
   */
  private bars(setting: ResultsSetting, domains: string[]): HTMLElement {
    this.barObserver?.disconnect();
    const wasDrawn = this.drawnBars;
    this.drawnBars = new Set();
    const pending = new Map<Element, () => void>();
    const observer = new IntersectionObserver(
      (entries) => {
        for (const e of entries) {
          const draw = pending.get(e.target);
          if (!e.isIntersecting || !draw) continue;
          pending.delete(e.target);
          observer.unobserve(e.target);
          draw();
        }
      },
      { rootMargin: '200px' },
    );
    this.barObserver = observer;
    const figures = columnsOf(domains).map((c) => {
      const { figure, draw } = barChart(c, setting.models);
      const drawOnce = (): void => {
        this.drawnBars.add(c);
        draw();
      };
      if (wasDrawn.has(c)) drawOnce();
      else {
        pending.set(figure, drawOnce);
        observer.observe(figure);
      }
      return figure;
    });
    return el('div', { class: 'chart-grid results-bars' }, figures);
  }

  private budgets(setting: ResultsSetting): HTMLElement {
    const avg = (m: ResultsModel): string => fmtSpread(m.ppl.average);
    const tokens = setting.models
      .filter((m) => m.budget.matchedTo === 'tokens' || m.role === 'baseline' || m.role === 'seed')
      .sort((a, b) => (a.budget.tokensAfterSeed ?? 0) - (b.budget.tokensAfterSeed ?? 0));
    const flops = setting.models
      .filter((m) => m.budget.trainFlops !== undefined)
      .sort((a, b) => (a.budget.trainFlops ?? 0) - (b.budget.trainFlops ?? 0));
    // Text columns read left-aligned; numbers right-aligned (the table's default).
    const cls = (h: string): string | undefined => (h === 'matched to' ? 'left' : undefined);
    const view = (
      title: string,
      note: string,
      models: ResultsModel[],
      cols: [string, (m: ResultsModel) => string][],
    ): HTMLElement =>
      el('div', { class: 'card budget-view' }, [
        el('h3', { text: title }),
        el('p', { class: 'note', text: note }),
        models.length
          ? el('table', { class: 'summary' }, [
              el('thead', {}, [
                el('tr', {}, [
                  el('th', { class: 'left', text: 'model' }),
                  ...cols.map(([h]) => el('th', { class: cls(h), text: h })),
                ]),
              ]),
              el(
                'tbody',
                {},
                models.map((m) =>
                  el('tr', { 'data-label': m.label }, [
                    el('th', { scope: 'row', class: 'left' }, [swatch(m.color), m.label]),
                    ...cols.map(([h, f]) => el('td', { class: cls(h), text: f(m) })),
                  ]),
                ),
              ),
            ])
          : el('p', {
              class: 'muted',
              text: 'No budgets recorded (an eval.json has none: open the study.json).',
            }),
      ]);
    return el('div', { class: 'overview budget-views' }, [
      view(
        'Equal tokens',
        'Every MoE trains on the same tokens (its own run); tokens after seed add what was trained on the way (branches, tuning).',
        tokens,
        [
          ['tokens', (m) => fmtTokens(m.budget.tokens)],
          ['tokens after seed', (m) => fmtTokens(m.budget.tokensAfterSeed)],
          ['matched to', (m) => m.budget.matchedTo ?? ''],
          ['average ppl', avg],
        ],
      ),
      view(
        'Equal compute',
        'Executed training FLOPs of each run (what top-k actually ran), lowest first.',
        flops,
        [
          ['train FLOPs', (m) => fmtFlops(m.budget.trainFlops)],
          ['matched to', (m) => m.budget.matchedTo ?? ''],
          ['average ppl', avg],
        ],
      ),
    ]);
  }
}

function swatch(color: string): HTMLElement {
  const s = el('span', { class: 'swatch', 'aria-hidden': 'true' });
  s.style.background = color;
  return s;
}

function perSeed(s: Spread | undefined): string {
  const values = s?.values ?? [];
  return values.length > 1
    ? `per seed: ${values.map((v) => (v === null ? 'failed' : v.toFixed(3))).join(', ')}`
    : '';
}

function claimCard(c: ResultsClaim): HTMLElement {
  const rows = c.comparisons.map((p) =>
    el('li', {}, [
      el('span', { class: 'comparison', text: `${p.lower} < ${p.higher}` }),
      el('span', {
        class: `margin ${p.marginPct > 0 ? 'ok' : 'bad'}`,
        text: ` ours ${fmtMargin(p.marginPct)}`,
      }),
      el('span', { class: 'margin paper', text: ` · paper ${fmtMargin(p.paperMarginPct)}` }),
      p.marginPctPerSeed.length > 1
        ? el('span', {
            class: 'muted',
            text: ` (per seed ${p.marginPctPerSeed.map((v) => fmtMargin(v)).join(', ')})`,
          })
        : '',
    ]),
  );
  const card = el('div', { class: `claim ${VERDICT_CLASS[c.verdict]}`, 'data-verdict': c.verdict }, [
    el('div', { class: 'claim-head' }, [
      el('span', { class: 'verdict', text: `${VERDICT_ICON[c.verdict]} ${c.verdict}` }),
      el('span', { class: 'claim-text', text: c.claim }),
      el('span', { class: 'muted', text: ` (${c.source})` }),
    ]),
    rows.length ? el('ul', { class: 'warning-list' }, rows) : '',
    c.missing.length ? el('p', { class: 'note', text: `not run: ${c.missing.join(', ')}` }) : '',
  ]);
  return card;
}

const BAR = { top: 8, right: 8, bottom: 64, left: 44, height: 220 };

/** One domain: a bar per model (mean) with a ± std error bar, in the model's colour; sized now,
 *  drawn by `draw`. */
function barChart(column: string, models: ResultsModel[]): { figure: HTMLElement; draw: () => void } {
  const shown = models.filter((m) => m.ppl[column]?.mean !== null && m.ppl[column]?.mean !== undefined);
  const width = Math.max(260, 28 * shown.length + BAR.left + BAR.right);
  const svgNode = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svgNode.setAttribute('class', 'bar-chart');
  svgNode.setAttribute('viewBox', `0 0 ${width} ${BAR.height}`);
  svgNode.setAttribute('role', 'img');
  svgNode.setAttribute('aria-label', `Perplexity on ${column} per model`);
  const figure = el('figure', { class: 'chart results-bar', 'data-column': column }, [
    el('figcaption', { class: 'chart-header' }, [el('h3', { class: 'chart-title', text: column })]),
    svgNode,
  ]);
  return { figure, draw: () => drawBars(svgNode, column, shown, width) };
}

function drawBars(svgNode: SVGSVGElement, column: string, shown: ResultsModel[], width: number): void {
  const svg = select(svgNode);
  const hi = Math.max(1, ...shown.map((m) => (m.ppl[column].mean ?? 0) + (m.ppl[column].std ?? 0)));
  const x = scaleBand<string>()
    .domain(shown.map((m) => m.label))
    .range([BAR.left, width - BAR.right])
    .padding(0.2);
  const y = scaleLinear()
    .domain([0, hi])
    .nice()
    .range([BAR.height - BAR.bottom, BAR.top]);
  svg
    .append('g')
    .attr('class', 'axis axis-y')
    .attr('transform', `translate(${BAR.left},0)`)
    .call(axisLeft(y).ticks(5));
  svg
    .append('g')
    .attr('class', 'axis axis-x')
    .attr('transform', `translate(0,${BAR.height - BAR.bottom})`)
    .call(axisBottom(x))
    .selectAll('text')
    .attr('text-anchor', 'end')
    .attr('transform', 'rotate(-40)')
    .attr('dx', '-0.4em')
    .attr('dy', '0.6em');
  const g = svg.append('g').attr('class', 'bars');
  for (const m of shown) {
    const s = m.ppl[column];
    const mean = s.mean ?? 0;
    const x0 = x(m.label) ?? 0;
    const bar = g
      .append('rect')
      .attr('class', 'bar')
      .attr('data-label', m.label)
      .attr('x', x0)
      .attr('width', x.bandwidth())
      .attr('y', y(mean))
      .attr('height', y(0) - y(mean))
      .attr('fill', m.color);
    bar.append('title').text(`${m.label}: ${fmtSpread(s, 3)}`);
    if (s.std !== null && s.std > 0) {
      const cx = x0 + x.bandwidth() / 2;
      const w = Math.min(8, x.bandwidth() / 3);
      const eb = g.append('g').attr('class', 'error-bar').attr('data-label', m.label);
      eb.append('line')
        .attr('x1', cx)
        .attr('x2', cx)
        .attr('y1', y(mean - s.std))
        .attr('y2', y(mean + s.std));
      for (const v of [mean - s.std, mean + s.std])
        eb.append('line')
          .attr('x1', cx - w)
          .attr('x2', cx + w)
          .attr('y1', y(v))
          .attr('y2', y(v));
    }
  }
}
