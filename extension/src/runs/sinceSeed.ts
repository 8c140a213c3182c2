// Where each run starts on the dashboard's "tokens since the seed" and "FLOPs since the seed" axes
// (ARCHITECTURE §7): after the checkpoint it started from, so a BTX / BAM pipeline reads as one
// tree of curves. vscode-free and pure (the unit tests feed it run lists and metrics).
//
// A run's parents (run.json "parents") are run ids or checkpoint paths of other runs. The
// checkpoint a parent run contributed is the step in a path of the form checkpoints/step-NNNNNN
// (in the parent reference itself, or in the run's config: `init` of a training run, `seed` and
// `experts` of an upcycle run); without a step, the parent's final state.
//
// A merge (an upcycle of the seed and its branches) has several parents that ran in parallel:
// - tokens since the seed is the timeline: the MAX over the parents of (parent's offset + its
//   tokens at the checkpoint), so a merge starts where its longest branch ended;
// - FLOPs since the seed is the compute spent: the SUM over every distinct ancestor run of the
//   FLOPs it executed up to the furthest checkpoint of it that was used (the seed counted once).
// For a chain of single parents both reduce to "parent's offset + parent's value at the checkpoint".
import type { MetricRecord, RunInfo } from './model';

export interface SeedOffset {
  tokens: number;
  flops: number;
  /** Parent references, of the run or an ancestor, that name no run in the store (or close a cycle): 0. */
  missing: string[];
}

/** A parent run and the step of its checkpoint the child started from (undefined: its final state). */
export interface ParentLink {
  run: RunInfo;
  step?: number;
}

const FINAL = Number.POSITIVE_INFINITY;

function normalize(p: string): string {
  return p.replace(/\\/g, '/').replace(/\/+$/, '').replace(/^\.\//, '');
}

/** A checkpoint path split into its run directory and step ("…/checkpoints/step-000100" → step 100). */
export function splitCheckpointPath(path: string): { dir: string; step?: number } {
  const p = normalize(path);
  const m = /^(.*?)\/(?:checkpoints\/step-(\d+)|checkpoints\/latest|checkpoints|checkpoint)$/.exec(p);
  if (!m) return { dir: p };
  return m[2] === undefined ? { dir: m[1] } : { dir: m[1], step: Number(m[2]) };
}

/** The run whose directory a path names: exactly when absolute, by its trailing folders when relative. */
function runAtDir(dir: string, runs: readonly RunInfo[], near: RunInfo): RunInfo | undefined {
  if (!dir) return undefined;
  const absolute = dir.startsWith('/') || /^[A-Za-z]:\//.test(dir);
  const hits = runs.filter((r) => {
    const d = normalize(r.dir);
    return absolute ? d === dir : d === dir || d.endsWith(`/${dir}`);
  });
  // Several runs with the same trailing folders: the one beside the child.
  return hits.sort((a, b) => commonPrefix(b.dir, near.dir) - commonPrefix(a.dir, near.dir))[0];
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** A run id, preferring the run in the child's own folder when ids repeat across experiments. */
function runWithId(id: string, runs: readonly RunInfo[], near: RunInfo): RunInfo | undefined {
  const hits = runs.filter((r) => r.id === id);
  return hits.sort((a, b) => commonPrefix(b.dir, near.dir) - commonPrefix(a.dir, near.dir))[0];
}

/** The checkpoint paths a run's config names: `init` (training), `seed` and `experts` (upcycle). */
function configPaths(run: RunInfo): string[] {
  const c = run.config ?? {};
  const out: string[] = [];
  for (const v of [c.init, c.seed, ...(Array.isArray(c.experts) ? c.experts : [])])
    if (typeof v === 'string' && v) out.push(v);
  return out;
}

/** The runs a run started from, each with the furthest step of it used; refs that match no run in `missing`. */
export function resolveParents(
  run: RunInfo,
  runs: readonly RunInfo[],
): { links: ParentLink[]; missing: string[] } {
  const links = new Map<RunInfo, number>();
  const missing: string[] = [];
  const steps = configPaths(run).map((p) => {
    const { dir, step } = splitCheckpointPath(p);
    return { run: runAtDir(dir, runs, run), step: step ?? FINAL };
  });
  for (const ref of run.parents ?? []) {
    let parent = runWithId(ref, runs, run);
    let step: number | undefined;
    if (!parent) {
      const at = splitCheckpointPath(ref);
      parent = runAtDir(at.dir, runs, run);
      step = at.step ?? FINAL;
    } else {
      // A parent named by id: the step of the checkpoint of it that the config names.
      const used = steps.filter((s) => s.run === parent).map((s) => s.step);
      step = used.length ? Math.max(...used) : FINAL;
    }
    if (!parent || parent === run) {
      missing.push(ref);
      continue;
    }
    links.set(parent, Math.max(links.get(parent) ?? -1, step));
  }
  return {
    links: [...links].map(([r, s]) => (s === FINAL ? { run: r } : { run: r, step: s })),
    missing,
  };
}

/**
 * A run's tokens and FLOPs at a step (its latest record at or before it, in file order, so a
 * resumed run's re-logged steps replace the first pass), or at its end. FLOPs fall back to
 * tokens × flops_per_token, and at the end to run.json's "flops".
 */
export function progressAt(
  run: RunInfo,
  records: readonly MetricRecord[],
  step = FINAL,
): { tokens: number; flops: number } {
  let tokens = 0;
  let flops: number | undefined;
  let found = false;
  for (const r of records) {
    if (typeof r.step !== 'number' || !(r.step <= step)) continue;
    if (typeof r.tokens === 'number' && Number.isFinite(r.tokens)) {
      tokens = r.tokens;
      found = true;
      flops = typeof r.flops === 'number' && Number.isFinite(r.flops) ? r.flops : undefined;
    }
  }
  if (flops === undefined) {
    const perToken = typeof run.flops_per_token === 'number' ? run.flops_per_token : undefined;
    if (found && perToken !== undefined) flops = tokens * perToken;
    else if (step === FINAL && typeof run.flops === 'number') flops = run.flops;
  }
  return { tokens, flops: flops ?? 0 };
}

/** Every run's offsets on the "since the seed" axes (runs without parents start at 0). */
export function seedOffsets(
  runs: readonly RunInfo[],
  metricsOf: (runId: string) => readonly MetricRecord[],
): Map<string, SeedOffset> {
  const parents = new Map(runs.map((r) => [r, resolveParents(r, runs)]));
  const progress = new Map<string, { tokens: number; flops: number }>();
  const at = (r: RunInfo, step: number | undefined): { tokens: number; flops: number } => {
    const key = `${r.dir}\u0000${step ?? 'final'}`;
    let p = progress.get(key);
    if (!p) progress.set(key, (p = progressAt(r, metricsOf(r.id), step)));
    return p;
  };
  // Per run: its timeline offset, and the furthest step of each ancestor (for the compute sum).
  const done = new Map<RunInfo, { tokens: number; ancestors: Map<RunInfo, number>; missing: string[] }>();
  const visiting = new Set<RunInfo>();
  const visit = (r: RunInfo): { tokens: number; ancestors: Map<RunInfo, number>; missing: string[] } => {
    const known = done.get(r);
    if (known) return known;
    visiting.add(r);
    const { links, missing } = parents.get(r) ?? resolveParents(r, runs);
    const out = { tokens: 0, ancestors: new Map<RunInfo, number>(), missing: [...missing] };
    for (const link of links) {
      if (visiting.has(link.run)) {
        out.missing.push(link.run.id); // a cycle in run.json: that link counts as 0
        continue;
      }
      const up = visit(link.run);
      for (const m of up.missing) if (!out.missing.includes(m)) out.missing.push(m);
      out.tokens = Math.max(out.tokens, up.tokens + at(link.run, link.step).tokens);
      const merge = (a: RunInfo, s: number): void => {
        out.ancestors.set(a, Math.max(out.ancestors.get(a) ?? -1, s));
      };
      merge(link.run, link.step ?? FINAL);
      for (const [a, s] of up.ancestors) merge(a, s);
    }
    visiting.delete(r);
    done.set(r, out);
    return out;
  };
  const offsets = new Map<string, SeedOffset>();
  for (const r of runs) {
    const v = visit(r);
    let flops = 0;
    for (const [a, s] of v.ancestors) flops += at(a, s === FINAL ? undefined : s).flops;
    offsets.set(r.id, { tokens: v.tokens, flops, missing: v.missing });
  }
  return offsets;
}
