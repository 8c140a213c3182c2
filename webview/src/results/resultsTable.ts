// The Results table as data and as text: mean ± std formatting, the best value per column, the
// rows grouped by role, and the Markdown, LaTeX (booktabs) and CSV writers of the copy buttons.
// No DOM and no vscode: the unit tests run it in plain Node.
import { csvFormatRows, format } from 'd3';
import type { ResultsModel, ResultsSetting, ResultsTask, Spread } from '../protocol';

export interface RowGroup {
  title: string;
  models: ResultsModel[];
}

/** The table's groups in reading order: what everything starts from, then what it is compared with. */
const GROUPS: { title: string; roles: ResultsModel['role'][] }[] = [
  { title: 'Seed', roles: ['seed'] },
  { title: 'Dense runs', roles: ['branch', 'tune'] },
  { title: 'Baselines', roles: ['baseline'] },
  { title: 'Methods', roles: ['method'] },
  { title: 'Variants', roles: ['variant'] },
];

export function groupRows(models: readonly ResultsModel[]): RowGroup[] {
  return GROUPS.map((g) => ({
    title: g.title,
    models: models.filter((m) => g.roles.includes(m.role)),
  })).filter((g) => g.models.length > 0);
}

/** The perplexity columns: one per domain, then the average. */
export function columnsOf(domains: readonly string[]): string[] {
  return [...domains, 'average'];
}

/** A value column: a domain's (or the average's) perplexity, or an lm-eval task's score. */
export interface ValueColumn {
  /** The domain name, or "task/<name>". */
  key: string;
  /** The header: the domain, or "<task> (<metric>)". */
  label: string;
  higherIsBetter: boolean;
  digits: number;
  /** The CSV header stem: "<domain>_ppl", "<task>_<metric>". */
  csv: string;
  value(m: ResultsModel): Spread | undefined;
}

const metricName = (t: ResultsTask): string => t.metric.split(',')[0];

/** Every value column in table order: perplexity per domain and average, then one per lm-eval task. */
export function valueColumns(domains: readonly string[], tasks: readonly ResultsTask[] = []): ValueColumn[] {
  return [
    ...columnsOf(domains).map((d) => pplColumn(d)),
    ...tasks.map((t): ValueColumn => ({
      key: `task/${t.name}`,
      label: `${t.name} (${metricName(t)})`,
      higherIsBetter: t.higherIsBetter,
      digits: 3,
      csv: `${t.name}_${metricName(t)}`,
      value: (m) => m.scores[t.name],
    })),
  ];
}

function pplColumn(d: string): ValueColumn {
  return { key: d, label: d, higherIsBetter: false, digits: 2, csv: `${d}_ppl`, value: (m) => m.ppl[d] };
}

/**
 * Per column, the labels with the best mean: the lowest perplexity, the highest accuracy (ties share
 * the mark; failed rows never win). A string column is a domain's perplexity.
 */
export function bestPerColumn(
  models: readonly ResultsModel[],
  columns: readonly (string | ValueColumn)[],
): Map<string, Set<string>> {
  const best = new Map<string, Set<string>>();
  for (const col of columns) {
    const c = typeof col === 'string' ? pplColumn(col) : col;
    const sign = c.higherIsBetter ? -1 : 1;
    let top = Infinity;
    for (const m of models) {
      const v = c.value(m)?.mean;
      if (v !== null && v !== undefined && sign * v < top) top = sign * v;
    }
    best.set(c.key, new Set(models.filter((m) => c.value(m)?.mean === sign * top).map((m) => m.label)));
  }
  return best;
}

/** "12.61 ± 0.04" over seeds, "12.61" from one seed, "—" when every seed failed. */
export function fmtSpread(s: Spread | undefined, digits = 2): string {
  if (!s || s.mean === null) return '—';
  return s.std === null ? s.mean.toFixed(digits) : `${s.mean.toFixed(digits)} ± ${s.std.toFixed(digits)}`;
}

/** A claim's margin in percent with its sign: "+0.45 %"; null (the paper has none) is "—". */
export function fmtMargin(pct: number | null): string {
  return pct === null ? '—' : `${pct >= 0 ? '+' : '−'}${Math.abs(pct).toFixed(2)} %`;
}

const si = format('.3~s');
export const fmtTokens = (v: number | undefined): string => (v === undefined ? '' : si(v));
export const fmtFlops = (v: number | undefined): string =>
  v === undefined ? '' : format('.3~e')(v).replace('e+', 'e');

const BUDGET_HEAD = ['tokens after seed', 'train FLOPs', 'matched to'];

function budgetCells(m: ResultsModel): string[] {
  return [fmtTokens(m.budget.tokensAfterSeed), fmtFlops(m.budget.trainFlops), m.budget.matchedTo ?? ''];
}

function hasBudgets(models: readonly ResultsModel[]): boolean {
  return models.some((m) => Object.keys(m.budget).length > 0);
}

/** The caption every writer states: what the numbers are and over how many seeds. */
export function caption(setting: ResultsSetting, tasks: readonly ResultsTask[] = []): string {
  const n = setting.seeds.length;
  const over =
    n > 1
      ? `mean ± std over ${n} seeds (${setting.seeds.join(', ')})`
      : n === 1
        ? `seed ${setting.seeds[0]}`
        : 'one evaluation';
  const block = setting.block ? `, ${setting.block} block` : '';
  const scored = tasks.length
    ? `; lm-eval task scores (${[...new Set(tasks.map((t) => `${metricName(t)}, ${t.higherIsBetter ? 'higher' : 'lower'} is better`))].join('; ')})`
    : '';
  return `Perplexity (lower is better)${scored}${setting.name ? ` — ${setting.name}` : ''}${block}; ${over}.`;
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

export function toMarkdown(
  setting: ResultsSetting,
  domains: readonly string[],
  tasks: readonly ResultsTask[] = [],
): string {
  const cols = valueColumns(domains, tasks);
  const best = bestPerColumn(setting.models, cols);
  const budgets = hasBudgets(setting.models);
  const head = ['model', 'role', ...cols.map((c) => c.label), ...(budgets ? BUDGET_HEAD : [])];
  const align = head.map((_, i) => (i < 2 || (budgets && i === head.length - 1) ? ':--' : '--:'));
  const lines = [`| ${head.map(mdEscape).join(' | ')} |`, `| ${align.join(' | ')} |`];
  for (const g of groupRows(setting.models)) {
    for (const m of g.models) {
      const cells = cols.map((c) => {
        const t = fmtSpread(c.value(m), c.digits);
        return best.get(c.key)?.has(m.label) ? `**${t}**` : t;
      });
      lines.push(
        `| ${[m.label, m.role, ...cells, ...(budgets ? budgetCells(m) : [])].map(mdEscape).join(' | ')} |`,
      );
    }
  }
  return `${caption(setting, tasks)} Best per column in bold.\n\n${lines.join('\n')}\n`;
}

export function latexEscape(s: string): string {
  return s.replace(
    /[\\{}&%$#_~^]/g,
    (c) =>
      ({ '\\': '\\textbackslash{}', '~': '\\textasciitilde{}', '^': '\\textasciicircum{}' })[c] ?? `\\${c}`,
  );
}

function latexSpread(s: Spread | undefined, bold: boolean, digits = 2): string {
  if (!s || s.mean === null) return '---';
  const body =
    s.std === null ? s.mean.toFixed(digits) : `${s.mean.toFixed(digits)} \\pm ${s.std.toFixed(digits)}`;
  return bold ? `$\\mathbf{${body}}$` : `$${body}$`;
}

/** A booktabs table (needs \usepackage{booktabs}): groups separated by \midrule, best per column in bold. */
export function toLatex(
  setting: ResultsSetting,
  domains: readonly string[],
  tasks: readonly ResultsTask[] = [],
): string {
  const cols = valueColumns(domains, tasks);
  const best = bestPerColumn(setting.models, cols);
  const budgets = hasBudgets(setting.models);
  const n = 1 + cols.length + (budgets ? BUDGET_HEAD.length : 0);
  const spec = `l${'r'.repeat(cols.length)}${budgets ? 'rrl' : ''}`;
  const head = [
    'Model',
    ...cols.map((c) => (c.key === 'average' ? 'Average' : c.label)),
    ...(budgets ? ['Tokens after seed', 'Train FLOPs', 'Matched to'] : []),
  ];
  const out = [
    '% \\usepackage{booktabs}',
    '\\begin{table}[t]',
    '\\centering',
    `\\caption{${latexEscape(caption(setting, tasks))} Best per column in bold.}`,
    `\\begin{tabular}{${spec}}`,
    '\\toprule',
    `${head.map(latexEscape).join(' & ')} \\\\`,
  ];
  for (const g of groupRows(setting.models)) {
    out.push('\\midrule', `\\multicolumn{${n}}{l}{\\emph{${latexEscape(g.title)}}} \\\\`);
    for (const m of g.models) {
      const cells = cols.map((c) =>
        latexSpread(c.value(m), best.get(c.key)?.has(m.label) ?? false, c.digits),
      );
      const extra = budgets
        ? budgetCells(m).map((b, i) =>
            i === 1 && b ? `$${b.replace(/e(-?)(\d+)/, ' \\times 10^{$1$2}')}$` : latexEscape(b),
          )
        : [];
      out.push(`${[latexEscape(m.label), ...cells, ...extra].join(' & ')} \\\\`);
    }
  }
  out.push('\\bottomrule', '\\end{tabular}', '\\end{table}');
  return `${out.join('\n')}\n`;
}

/** One row per model: mean and std per column (empty where missing), the budget in plain numbers. */
export function toCsv(
  setting: ResultsSetting,
  domains: readonly string[],
  tasks: readonly ResultsTask[] = [],
): string {
  const cols = valueColumns(domains, tasks);
  const head = [
    'model',
    'role',
    ...cols.flatMap((c) => [`${c.csv}_mean`, `${c.csv}_std`]),
    'seeds',
    'tokens',
    'tokens_after_seed',
    'train_flops',
    'matched_to',
  ];
  const cell = (v: number | null | undefined): string => (v === null || v === undefined ? '' : String(v));
  const rows = groupRows(setting.models).flatMap((g) =>
    g.models.map((m) => [
      m.label,
      m.role,
      ...cols.flatMap((c) => [cell(c.value(m)?.mean), cell(c.value(m)?.std)]),
      String(m.ppl.average?.values.length ?? 0),
      cell(m.budget.tokens),
      cell(m.budget.tokensAfterSeed),
      cell(m.budget.trainFlops),
      m.budget.matchedTo ?? '',
    ]),
  );
  return `${csvFormatRows([head, ...rows])}\n`;
}
