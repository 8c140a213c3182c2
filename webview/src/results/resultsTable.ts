// The Results table as data and as text: mean ± std formatting, the best value per column, the
// rows grouped by role, and the Markdown, LaTeX (booktabs) and CSV writers of the copy buttons.
// No DOM and no vscode: the unit tests run it in plain Node.
import { csvFormatRows, format } from 'd3';
import type { ResultsModel, ResultsSetting, Spread } from '../protocol';

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

/** The table's value columns: one per domain, then the average. */
export function columnsOf(domains: readonly string[]): string[] {
  return [...domains, 'average'];
}

/** Per column, the labels with the lowest mean perplexity (ties share the mark; failed rows never win). */
export function bestPerColumn(
  models: readonly ResultsModel[],
  columns: readonly string[],
): Map<string, Set<string>> {
  const best = new Map<string, Set<string>>();
  for (const c of columns) {
    let lo = Infinity;
    for (const m of models) {
      const v = m.ppl[c]?.mean;
      if (v !== null && v !== undefined && v < lo) lo = v;
    }
    best.set(c, new Set(models.filter((m) => m.ppl[c]?.mean === lo).map((m) => m.label)));
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
export function caption(setting: ResultsSetting): string {
  const n = setting.seeds.length;
  const over =
    n > 1
      ? `mean ± std over ${n} seeds (${setting.seeds.join(', ')})`
      : n === 1
        ? `seed ${setting.seeds[0]}`
        : 'one evaluation';
  const block = setting.block ? `, ${setting.block} block` : '';
  return `Perplexity (lower is better)${setting.name ? ` — ${setting.name}` : ''}${block}; ${over}.`;
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

export function toMarkdown(setting: ResultsSetting, domains: readonly string[]): string {
  const cols = columnsOf(domains);
  const best = bestPerColumn(setting.models, cols);
  const budgets = hasBudgets(setting.models);
  const head = ['model', 'role', ...cols, ...(budgets ? BUDGET_HEAD : [])];
  const align = head.map((_, i) => (i < 2 || (budgets && i === head.length - 1) ? ':--' : '--:'));
  const lines = [`| ${head.map(mdEscape).join(' | ')} |`, `| ${align.join(' | ')} |`];
  for (const g of groupRows(setting.models)) {
    for (const m of g.models) {
      const cells = cols.map((c) => {
        const t = fmtSpread(m.ppl[c]);
        return best.get(c)?.has(m.label) ? `**${t}**` : t;
      });
      lines.push(
        `| ${[m.label, m.role, ...cells, ...(budgets ? budgetCells(m) : [])].map(mdEscape).join(' | ')} |`,
      );
    }
  }
  return `${caption(setting)} Best per column in bold.\n\n${lines.join('\n')}\n`;
}

export function latexEscape(s: string): string {
  return s.replace(
    /[\\{}&%$#_~^]/g,
    (c) =>
      ({ '\\': '\\textbackslash{}', '~': '\\textasciitilde{}', '^': '\\textasciicircum{}' })[c] ?? `\\${c}`,
  );
}

function latexSpread(s: Spread | undefined, bold: boolean): string {
  if (!s || s.mean === null) return '---';
  const body = s.std === null ? s.mean.toFixed(2) : `${s.mean.toFixed(2)} \\pm ${s.std.toFixed(2)}`;
  return bold ? `$\\mathbf{${body}}$` : `$${body}$`;
}

/** A booktabs table (needs \usepackage{booktabs}): groups separated by \midrule, best per column in bold. */
export function toLatex(setting: ResultsSetting, domains: readonly string[]): string {
  const cols = columnsOf(domains);
  const best = bestPerColumn(setting.models, cols);
  const budgets = hasBudgets(setting.models);
  const n = 1 + cols.length + (budgets ? BUDGET_HEAD.length : 0);
  const spec = `l${'r'.repeat(cols.length)}${budgets ? 'rrl' : ''}`;
  const head = [
    'Model',
    ...cols.map((c) => (c === 'average' ? 'Average' : c)),
    ...(budgets ? ['Tokens after seed', 'Train FLOPs', 'Matched to'] : []),
  ];
  const out = [
    '% \\usepackage{booktabs}',
    '\\begin{table}[t]',
    '\\centering',
    `\\caption{${latexEscape(caption(setting))} Best per column in bold.}`,
    `\\begin{tabular}{${spec}}`,
    '\\toprule',
    `${head.map(latexEscape).join(' & ')} \\\\`,
  ];
  for (const g of groupRows(setting.models)) {
    out.push('\\midrule', `\\multicolumn{${n}}{l}{\\emph{${latexEscape(g.title)}}} \\\\`);
    for (const m of g.models) {
      const cells = cols.map((c) => latexSpread(m.ppl[c], best.get(c)?.has(m.label) ?? false));
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
export function toCsv(setting: ResultsSetting, domains: readonly string[]): string {
  const cols = columnsOf(domains);
  const head = [
    'model',
    'role',
    ...cols.flatMap((c) => [`${c}_ppl_mean`, `${c}_ppl_std`]),
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
      ...cols.flatMap((c) => [cell(m.ppl[c]?.mean), cell(m.ppl[c]?.std)]),
      String(m.ppl.average?.values.length ?? 0),
      cell(m.budget.tokens),
      cell(m.budget.tokensAfterSeed),
      cell(m.budget.trainFlops),
      m.budget.matchedTo ?? '',
    ]),
  );
  return `${csvFormatRows([head, ...rows])}\n`;
}
