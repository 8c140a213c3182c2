// Synthetic runs shaped like the demo's (ARCHITECTURE §4): metrics every 10 steps,
// eval every 50 with per-domain losses, routing per logged step × layer × router.
import type { Cell, MetricBlock, RoutingRow, RunSummary, SaturationPoint } from '../../webview/src/protocol';

interface JsonBlock extends MetricBlock {
  step: number[];
  tokens: Cell[];
  flops: Cell[];
  time: Cell[];
  values: Record<string, Cell[]>;
}

export const DOMAINS = ['code', 'math', 'prose'];

/** Deterministic noise (mulberry32), so screenshots do not change between runs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const RUNS: RunSummary[] = [
  {
    id: 'bam-ekv-s1',
    name: 'bam-ekv seed 1',
    experiment: 'bam-ekv',
    method: 'bam-ekv',
    status: 'done',
    stage: 'moe',
  },
  {
    id: 'bam-ekv-s2',
    name: 'bam-ekv seed 2',
    experiment: 'bam-ekv',
    method: 'bam-ekv',
    status: 'done',
    stage: 'moe',
  },
  { id: 'btx-s1', name: 'btx seed 1', experiment: 'btx', method: 'btx', status: 'running', stage: 'moe' },
  {
    id: 'sparse-s1',
    name: 'sparse seed 1',
    experiment: 'sparse',
    method: 'sparse',
    status: 'failed',
    stage: 'moe',
  },
];

export function metricBlocks(
  runId: string,
  seed: number,
  fromStep: number,
  toStep: number,
  floor = 1.2,
): MetricBlock[] {
  const r = rng(seed * 7919 + fromStep);
  const train: JsonBlock = {
    runId,
    split: 'train',
    step: [],
    tokens: [],
    flops: [],
    time: [],
    values: { loss: [], lr: [], grad_norm: [], tokens_per_s: [], lb_loss: [], z_loss: [] },
  };
  const evl: JsonBlock = {
    runId,
    split: 'eval',
    step: [],
    tokens: [],
    flops: [],
    time: [],
    values: { loss: [], ...Object.fromEntries(DOMAINS.map((d) => [`domain/${d}`, [] as Cell[]])) },
  };
  for (let step = fromStep; step <= toStep; step += 10) {
    const base = floor + 3.2 * Math.exp(-step / (250 + seed * 30));
    train.step.push(step);
    train.tokens.push(step * 4096);
    train.flops.push(step * 4096 * 6e7); // 3 × forward of a ~10M-parameter model per token
    train.time.push(1_700_000_000 + step * 0.8);
    train.values.loss.push(base + (r() - 0.5) * 0.35 + (r() < 0.01 ? 2 : 0));
    train.values.lr.push(
      step < 100 ? 3e-4 * (step / 100) : 3e-4 * 0.5 * (1 + Math.cos((Math.PI * step) / 2000)),
    );
    train.values.grad_norm.push(0.6 + 2 * Math.exp(-step / 150) + r() * 0.3);
    train.values.tokens_per_s.push(5000 + r() * 400 + seed * 200);
    train.values.lb_loss.push(0.01 + 0.02 * Math.exp(-step / 400) + r() * 0.002);
    train.values.z_loss.push(0.001 + 0.004 * Math.exp(-step / 300) + r() * 0.0003);
    if (step % 50 === 0) {
      evl.step.push(step);
      evl.tokens.push(step * 4096);
      evl.flops.push(step * 4096 * 6e7);
      evl.time.push(1_700_000_000 + step * 0.8);
      evl.values.loss.push(base + 0.08);
      DOMAINS.forEach((d, i) => evl.values[`domain/${d}`].push(base + 0.1 + i * 0.15 + (r() - 0.5) * 0.05));
    }
  }
  return [train, evl];
}

export function demoBlocks(toStep = 1000): MetricBlock[] {
  return RUNS.flatMap((run, i) =>
    metricBlocks(run.id, i + 1, 0, run.status === 'failed' ? 400 : toStep, 1.1 + i * 0.08),
  );
}

export interface RoutingShape {
  layers: number;
  experts: number;
  steps: number[];
  routers: ('ffn' | 'attn')[];
  /** Expert that takes over as training goes (router collapse), if any. */
  collapseTo?: number;
  /** Expert that gets no tokens (dead), if any. */
  dead?: number;
  seed?: number;
  perToken?: boolean;
}

export function routingRows(shape: RoutingShape): RoutingRow[] {
  const r = rng(shape.seed ?? 1);
  const rows: RoutingRow[] = [];
  const E = shape.experts;
  const last = shape.steps[shape.steps.length - 1] || 1;
  // Rounded like the engine's JSON (and to keep the 40 × 256 fixture small).
  const norm = (a: number[]): number[] => {
    const s = a.reduce((x, y) => x + y, 0) || 1;
    return a.map((v) => Math.round((v / s) * 1e5) / 1e5);
  };
  for (const step of shape.steps) {
    const t = step / last;
    for (let layer = 0; layer < shape.layers; layer++) {
      for (const router of shape.routers) {
        const raw = Array.from({ length: E }, (_, e) => {
          if (e === shape.dead) return 0;
          let v = 1 + 0.5 * Math.sin(e * 1.3 + layer * 0.7 + t * 3) + r() * 0.3;
          if (shape.collapseTo !== undefined && e === shape.collapseTo) v += t * E * 2;
          return Math.max(0.001, v);
        });
        const load = norm(raw);
        const prob = norm(raw.map((v) => Math.pow(v, 0.7)));
        // Domain d prefers expert d % E more and more as training goes: specialisation grows.
        const by_domain = Object.fromEntries(
          DOMAINS.map((d, di) => [
            d,
            norm(raw.map((v, e) => v * (e % DOMAINS.length === di ? 1 + 4 * t : 1))),
          ]),
        );
        const row: RoutingRow = { step, layer, router, load, prob, by_domain };
        if (shape.perToken && router === 'ffn') {
          row.coact = Array.from({ length: E }, (_, i) =>
            Array.from({ length: E }, (_, j) =>
              i === j ? 1 : Math.round((0.05 + 0.4 * Math.abs(Math.sin(i * 3 + j + layer))) * 1e4) / 1e4,
            ),
          );
        }
        rows.push(row);
      }
    }
  }
  return rows;
}

/** What the engine appends when a run is done: saturation per logged step and top-k (FFN) router, 1 at the last step. */
export function saturationPoints(rows: readonly RoutingRow[]): SaturationPoint[] {
  const last = Math.max(1, ...rows.map((row) => row.step));
  return rows
    .filter((row) => row.router === 'ffn')
    .map(({ step, layer, router }) => ({
      step,
      layer,
      router,
      saturation:
        step === last
          ? 1
          : Math.round((0.3 + 0.6 * Math.sqrt(step / last) + 0.02 * Math.sin(layer)) * 1e5) / 1e5,
    }));
}

export function steps(to: number, every: number): number[] {
  return Array.from({ length: Math.floor(to / every) + 1 }, (_, i) => i * every);
}
