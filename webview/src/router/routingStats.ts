// Router statistics from one routing.jsonl record: utilization, imbalance,
// specialization, and the dead-expert / collapse rules. Pure functions.

/** Load over ideal load: 1 = the expert gets exactly its share (sum of load / E). */
export function utilization(load: readonly number[]): number[] {
  const sum = load.reduce((a, b) => a + b, 0);
  const ideal = sum / load.length || 1;
  return load.map((l) => l / ideal);
}

export interface Imbalance {
  /** Coefficient of variation of the load: 0 = perfectly balanced. */
  cv: number;
  maxOverMean: number;
}

export function imbalance(load: readonly number[]): Imbalance {
  const n = load.length;
  const mean = load.reduce((a, b) => a + b, 0) / n;
  if (!(mean > 0)) return { cv: 0, maxOverMean: 0 };
  const variance = load.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  return { cv: Math.sqrt(variance) / mean, maxOverMean: Math.max(...load) / mean };
}

function entropy(p: readonly number[]): number {
  let h = 0;
  for (const v of p) if (v > 0) h -= v * Math.log(v);
  return h;
}

function normalize(a: readonly number[]): number[] {
  const s = a.reduce((x, y) => x + y, 0);
  return s > 0 ? a.map((v) => v / s) : a.map(() => 0);
}

/**
 * How much the expert choice says about the domain: the mutual information
 * I(domain; expert) with domains weighted equally, over its maximum
 * log(min(D, E)). 0 = every domain routes alike, 1 = each domain has its own experts.
 */
export function specialization(byDomain: Record<string, readonly number[]> | undefined): number {
  const rows = Object.values(byDomain ?? {}).map(normalize);
  if (rows.length < 2) return NaN;
  const e = rows[0].length;
  const marginal = new Array<number>(e).fill(0);
  for (const r of rows) for (let i = 0; i < e; i++) marginal[i] += r[i] / rows.length;
  const mi = entropy(marginal) - rows.reduce((a, r) => a + entropy(r), 0) / rows.length;
  const max = Math.log(Math.min(rows.length, e));
  return max > 0 ? Math.max(0, Math.min(1, mi / max)) : NaN;
}

/**
 * An expert is dead when it gets under 5% of its fair share of tokens: utilization (load over the
 * uniform share, sum of load / E) below 0.05, not an absolute load fraction below 0.05, which
 * would call every expert of a 32-expert layer dead (fair share 1/32) and none of a top-2 layer
 * whose loads sum to 2. The one definition: the router panel's counts and warnings both use it.
 */
export const DEAD_UTILIZATION = 0.05;
/** ...in each of the last few logged steps, so one noisy batch does not warn. */
export const DEAD_WINDOW = 3;
/** The rule in words, for what the panel shows. */
export const DEAD_RULE = `dead: under ${DEAD_UTILIZATION * 100}% of its fair share of tokens (1/E of the routed load) in each of the last ${DEAD_WINDOW} logged steps`;

/** The dead experts of a router, from its loads at the logged steps (oldest first; the last DEAD_WINDOW count). */
export function deadExperts(recentLoads: readonly (readonly number[])[]): number[] {
  if (!recentLoads.length) return [];
  const utils = recentLoads.slice(-DEAD_WINDOW).map(utilization);
  const e = utils[0].length;
  const dead: number[] = [];
  for (let i = 0; i < e; i++) if (utils.every((u) => u[i] < DEAD_UTILIZATION)) dead.push(i);
  return dead;
}

/**
 * Collapse: routing concentrated on a few experts. The smallest set of experts
 * carrying half of the routing mass has at most max(1, E/8) members (with E = 4,
 * one expert takes half of all assignments).
 */
export function collapsedOnto(load: readonly number[]): number[] | undefined {
  const e = load.length;
  if (e < 2) return undefined;
  const total = load.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return undefined;
  const order = load.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]);
  const limit = Math.max(1, Math.floor(e / 8));
  let acc = 0;
  const top: number[] = [];
  for (const [v, i] of order) {
    acc += v;
    top.push(i);
    if (acc >= total / 2) break;
  }
  return top.length <= limit && (e > 2 || load[top[0]] / total > 0.9) ? top : undefined;
}

export interface Quantiles {
  min: number;
  q1: number;
  median: number;
  q3: number;
  max: number;
}

export function quantiles(values: number[]): Quantiles {
  const s = [...values].sort((a, b) => a - b);
  const q = (p: number): number => {
    if (!s.length) return NaN;
    const i = (s.length - 1) * p;
    const lo = Math.floor(i);
    return s[lo] + (s[Math.min(s.length - 1, lo + 1)] - s[lo]) * (i - lo);
  };
  return { min: s[0] ?? NaN, q1: q(0.25), median: q(0.5), q3: q(0.75), max: s[s.length - 1] ?? NaN };
}
