// Reads what the Results panel shows: study.json (engine/moelab/train/study.py, "schema": 1), a
// pipeline's eval.json (train/pipeline.py `_eval`: one seed, no claims) or a run's own eval.json
// (one model), into the protocol's ResultsDoc. vscode-free; every value is checked, so what the
// host posts always passes the webview's guard. A file we cannot read is one line of error.
import type {
  ResultsBudget,
  ResultsClaim,
  ResultsDoc,
  ResultsModel,
  ResultsRole,
  ResultsSetting,
  ResultsTask,
  Spread,
  Verdict,
} from '../../../webview/src/protocol';
import { VERDICTS } from '../../../webview/src/protocolGuards';
import { colorFamily, colorsFor } from '../runs/runColors';

export class ResultsFileError extends Error {}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const numOrNull = (v: unknown): number | null => num(v) ?? null;
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The engine's MoE methods: a label among them is a method, any other MoE label a variant (study.py `role`). */
const METHODS = new Set(['sparse', 'btx', 'bam-ekv', 'bam-skv', 'upit']);
const ROLES: ResultsRole[] = ['seed', 'branch', 'tune', 'baseline', 'method', 'variant'];

export function roleOf(label: string): ResultsRole {
  if (label === 'seed' || label === 'tune') return label;
  if (label.startsWith('branch-')) return 'branch';
  if (label === 'dense-continued') return 'baseline';
  return METHODS.has(label) ? 'method' : 'variant';
}

function spread(v: unknown): Spread {
  if (!isObj(v)) return { mean: null, std: null, values: [] };
  const values = Array.isArray(v.values) ? v.values.map(numOrNull) : [];
  return { mean: numOrNull(v.mean), std: numOrNull(v.std), values };
}

function one(ppl: unknown): Spread {
  const v = num(ppl);
  return { mean: v ?? null, std: null, values: [v ?? null] };
}

function budget(v: unknown): ResultsBudget {
  if (!isObj(v)) return {};
  const b: ResultsBudget = {};
  const put = <K extends keyof ResultsBudget>(k: K, x: ResultsBudget[K] | undefined): void => {
    if (x !== undefined) b[k] = x;
  };
  put('steps', num(v.steps));
  put('tokens', num(v.tokens));
  put('tokensAfterSeed', num(v.tokens_after_seed));
  put('trainFlops', num(v.train_flops));
  put('matchedTo', str(v.matched_to));
  return b;
}

function claims(v: unknown): ResultsClaim[] {
  if (!Array.isArray(v)) return [];
  return v.filter(isObj).map((c) => ({
    claim: str(c.claim) ?? '',
    source: str(c.source) ?? '',
    verdict: (VERDICTS.includes(c.verdict as Verdict) ? c.verdict : 'not measured') as Verdict,
    missing: Array.isArray(c.missing) ? c.missing.filter((x): x is string => typeof x === 'string') : [],
    comparisons: (Array.isArray(c.comparisons) ? c.comparisons : []).filter(isObj).flatMap((p) => {
      const margin = num(p.margin_pct);
      const lower = str(p.lower);
      const higher = str(p.higher);
      if (margin === undefined || lower === undefined || higher === undefined) return [];
      const perSeed = Array.isArray(p.margin_pct_per_seed)
        ? p.margin_pct_per_seed.map(num).filter((x): x is number => x !== undefined)
        : [];
      return [
        {
          lower,
          higher,
          marginPct: margin,
          marginPctPerSeed: perSeed,
          paperMarginPct: numOrNull(p.paper_margin_pct),
        },
      ];
    }),
  }));
}

/** Colours of a setting's models: `colorOf` (the store's run of that label) first, else by the label's family. */
function withColors(
  models: Omit<ResultsModel, 'color'>[],
  colorOf: (label: string) => string | undefined,
): ResultsModel[] {
  const byFamily = colorsFor(models.map((m) => ({ id: m.label, family: colorFamily(m.label) })));
  return models.map((m) => ({ ...m, color: colorOf(m.label) ?? byFamily.get(m.label) ?? 'hsl(0, 0%, 50%)' }));
}

/** lm-eval metrics in the order a paper's table prefers them; keys are "<metric>,<filter>" ("acc,none"). */
const METRIC_ORDER = [
  'acc',
  'acc_norm',
  'exact_match',
  'f1',
  'mcc',
  'bleu',
  'word_perplexity',
  'bits_per_byte',
];
/** lm-eval's metrics where lower is better; every other metric it reports is a score (higher is better). */
const LOWER_IS_BETTER = /perplexity|bits_per_byte/;

/** A model's lm-eval scores, {task: {metric: value}} (harness.py), from its eval.json entry. */
function taskScores(m: Obj): Record<string, Obj> {
  const lm = isObj(m.lm_eval) ? m.lm_eval : undefined;
  const tasks = lm && isObj(lm.tasks) ? lm.tasks : {};
  return Object.fromEntries(Object.entries(tasks).filter((e): e is [string, Obj] => isObj(e[1])));
}

/** One column per task scored by any model: the metric the most-preferred of METRIC_ORDER it has. */
function tasksOf(models: readonly Obj[]): ResultsTask[] {
  const keys = new Map<string, Set<string>>();
  for (const m of models)
    for (const [task, scores] of Object.entries(taskScores(m)))
      for (const [k, v] of Object.entries(scores))
        if (num(v) !== undefined && !k.includes('_stderr'))
          keys.set(task, (keys.get(task) ?? new Set()).add(k));
  const out: ResultsTask[] = [];
  for (const [name, ks] of keys) {
    const sorted = [...ks].sort();
    const metric =
      METRIC_ORDER.map((base) => sorted.find((k) => k.split(',')[0] === base)).find((k) => k !== undefined) ??
      sorted[0];
    out.push({ name, metric, higherIsBetter: !LOWER_IS_BETTER.test(metric.split(',')[0]) });
  }
  return out;
}

function domainsOf(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || !v.every((d) => typeof d === 'string'))
    throw new ResultsFileError(`${what} has no "domains" list`);
  return v as string[];
}

function fromStudy(doc: Obj, colorOf: (label: string) => string | undefined): ResultsDoc {
  if (doc.schema !== 1)
    throw new ResultsFileError(
      `study.json schema ${JSON.stringify(doc.schema)} is not supported (this version reads schema 1)`,
    );
  const domains = domainsOf(doc.domains, 'study.json');
  if (!Array.isArray(doc.settings)) throw new ResultsFileError('study.json has no "settings" list');
  const settings: ResultsSetting[] = doc.settings.filter(isObj).map((s) => {
    const models = isObj(s.models)
      ? Object.entries(s.models)
          .filter(([, m]) => isObj(m))
          .map(([label, m]) => {
            const mm = m as Obj;
            const ppl: Record<string, Spread> = {};
            for (const d of [...domains, 'average']) ppl[d] = spread(isObj(mm.ppl) ? mm.ppl[d] : undefined);
            const role = ROLES.includes(mm.role as ResultsRole) ? (mm.role as ResultsRole) : roleOf(label);
            return { label, role, budget: budget(mm.budget), ppl, scores: {} };
          })
      : [];
    return {
      name: str(s.name) ?? '',
      block: str(s.block) ?? '',
      seeds: Array.isArray(s.seeds) ? s.seeds.map(num).filter((x): x is number => x !== undefined) : [],
      models: withColors(models, colorOf),
      claims: claims(s.claims),
    };
  });
  // study.json (train/study.py) aggregates perplexity only: task scores come from an eval.json.
  return { kind: 'study', domains, tasks: [], settings };
}

/** The pipeline's eval.json ({experiment, domains, models}) or a run's ({run, domains: {d: {ppl}}, average}). */
function fromEval(doc: Obj, colorOf: (label: string) => string | undefined): ResultsDoc {
  const entry = (
    label: string,
    m: Obj,
    domains: string[],
    tasks: ResultsTask[],
  ): Omit<ResultsModel, 'color'> => {
    const ppl: Record<string, Spread> = {};
    for (const d of domains)
      ppl[d] = one(isObj(m.domains) && isObj(m.domains[d]) ? m.domains[d].ppl : undefined);
    ppl.average = one(isObj(m.average) ? m.average.ppl : undefined);
    const own = taskScores(m);
    const scores: Record<string, Spread> = {};
    for (const t of tasks) scores[t.name] = one(own[t.name]?.[t.metric]);
    return { label, role: roleOf(label), budget: {}, ppl, scores };
  };
  if (isObj(doc.models)) {
    const domains = domainsOf(doc.domains, 'eval.json');
    const raw = Object.entries(doc.models).filter((e): e is [string, Obj] => isObj(e[1]));
    const tasks = tasksOf(raw.map(([, m]) => m));
    const models = raw.map(([label, m]) => entry(label, m, domains, tasks));
    return {
      kind: 'eval',
      domains,
      tasks,
      settings: [
        {
          name: str(doc.experiment) ?? '',
          block: '',
          seeds: [],
          models: withColors(models, colorOf),
          claims: [],
        },
      ],
    };
  }
  if (isObj(doc.domains) && isObj(doc.average)) {
    const label = str(doc.run) ?? 'model';
    const domains = Object.keys(doc.domains);
    const tasks = tasksOf([doc]);
    return {
      kind: 'eval',
      domains,
      tasks,
      settings: [
        {
          name: label,
          block: '',
          seeds: [],
          models: withColors([entry(label, doc, domains, tasks)], colorOf),
          claims: [],
        },
      ],
    };
  }
  throw new ResultsFileError(
    'eval.json has neither "models" (an experiment\'s evaluation) nor "domains" with "average" (a run\'s)',
  );
}

/** text: the file's contents; name: its base name, for the messages. colorOf: a label's run colour, if the store has that run. */
export function parseResults(
  text: string,
  name: string,
  colorOf: (label: string) => string | undefined = () => undefined,
): ResultsDoc {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ResultsFileError(
      `${name} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (!isObj(doc)) throw new ResultsFileError(`${name} is not a JSON object`);
  return doc.kind === 'moelab-study' || 'settings' in doc ? fromStudy(doc, colorOf) : fromEval(doc, colorOf);
}
