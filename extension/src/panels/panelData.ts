// Shapes the run store's records into protocol messages (vscode-free, tested).
// The store hands us whatever JSON the engine wrote: every value is checked,
// so that what we post always passes the webview's validation.
import type { MetricRecord, RoutingRecord, RunInfo } from '../runs/model';
import type {
  Cell,
  MetricBlock,
  RoutingBlock,
  RoutingRow,
  RunSummary,
  SaturationPoint,
} from '../../../webview/src/protocol';

// The x-axis columns (step, tokens, flops, time) are not metrics of their own.
const SKIP = new Set(['step', 'tokens', 'flops', 'time', 'split', 'domain']);

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** color: the run's colour from runs/runColors.ts (assigned over the whole store). */
export function toRunSummary(run: RunInfo, color?: string): RunSummary {
  const config = run.config ?? {};
  const seed = num(config.seed);
  const name =
    str(run.name) ??
    (seed !== undefined && !run.id.includes(String(seed)) ? `${run.id} (seed ${seed})` : run.id);
  return {
    id: run.id,
    name,
    status: str(run.status) ?? 'unknown',
    experiment: str(run.experiment),
    method: str(run.method),
    stage: str(run.stage),
    ...(color ? { color } : {}),
  };
}

/** metrics.jsonl records → one columnar block per split (train / eval). */
export function toMetricBlocks(runId: string, records: readonly MetricRecord[]): MetricBlock[] {
  interface Building extends MetricBlock {
    step: number[];
    tokens: Cell[];
    flops: Cell[];
    time: Cell[];
    values: Record<string, Cell[]>;
  }
  const blocks: Record<'train' | 'eval', Building> = {
    train: { runId, split: 'train', step: [], tokens: [], flops: [], time: [], values: {} },
    eval: { runId, split: 'eval', step: [], tokens: [], flops: [], time: [], values: {} },
  };
  for (const r of records) {
    const step = num(r.step);
    if (step === undefined) continue;
    const b = blocks[r.split === 'eval' ? 'eval' : 'train'];
    const i = b.step.length;
    const cells: [string, number][] = [];
    for (const [k, v] of Object.entries(r)) {
      if (SKIP.has(k)) continue;
      const n = num(v);
      if (n !== undefined) cells.push([k, n]);
    }
    if (r.domain && typeof r.domain === 'object') {
      for (const [d, v] of Object.entries(r.domain)) {
        const n = num(v);
        if (n !== undefined) cells.push([`domain/${d}`, n]);
      }
    }
    if (!cells.length) continue;
    b.step.push(step);
    b.tokens.push(num(r.tokens) ?? null);
    b.flops.push(num(r.flops) ?? null);
    b.time.push(num(r.time) ?? null);
    for (const [k, n] of cells) {
      let col = b.values[k];
      if (!col) {
        col = new Array<Cell>(i).fill(null);
        b.values[k] = col;
      }
      col.push(n);
    }
    for (const col of Object.values(b.values)) if (col.length < i + 1) col.push(null);
  }
  return [blocks.train, blocks.eval].filter((b) => b.step.length > 0);
}

function numArray(v: unknown, length?: number): number[] | undefined {
  if (!Array.isArray(v) || (length !== undefined && v.length !== length)) return undefined;
  return v.every((x) => num(x) !== undefined) ? (v as number[]) : undefined;
}

function routingKey(r: RoutingRecord): Pick<RoutingRow, 'step' | 'layer' | 'router'> | undefined {
  const step = num(r.step);
  const layer = num(r.layer);
  const router = r.router === 'attn' ? 'attn' : r.router === 'ffn' ? 'ffn' : undefined;
  return step === undefined || layer === undefined || !Number.isInteger(layer) || !router
    ? undefined
    : { step, layer, router };
}

export function toRoutingRow(r: RoutingRecord): RoutingRow | undefined {
  const key = routingKey(r);
  const load = numArray(r.load);
  if (!key || !load?.length) return undefined;
  const row: RoutingRow = { ...key, load, prob: numArray(r.prob, load.length) ?? [] };
  if (r.by_domain && typeof r.by_domain === 'object') {
    const by: Record<string, number[]> = {};
    for (const [d, v] of Object.entries(r.by_domain)) {
      const a = numArray(v, load.length);
      if (a) by[d] = a;
    }
    row.by_domain = by;
  }
  if (
    Array.isArray(r.coact) &&
    r.coact.length === load.length &&
    r.coact.every((x) => numArray(x, load.length))
  ) {
    row.coact = r.coact;
  }
  return row;
}

/** A record without load that carries saturation (written when the run is done). */
export function toSaturationPoint(r: RoutingRecord): SaturationPoint | undefined {
  const key = routingKey(r);
  const saturation = num(r.saturation);
  if (!key || r.load !== undefined || saturation === undefined || saturation < 0 || saturation > 1)
    return undefined;
  return { ...key, saturation };
}

export function toRoutingRows(records: readonly RoutingRecord[]): RoutingRow[] {
  return records.map(toRoutingRow).filter((row): row is RoutingRow => row !== undefined);
}

/** A run's records as one message block: per-step rows, and saturation to merge into them. */
export function toRoutingBlock(runId: string, records: readonly RoutingRecord[]): RoutingBlock {
  const saturation = records.map(toSaturationPoint).filter((p): p is SaturationPoint => p !== undefined);
  const block: RoutingBlock = { runId, rows: toRoutingRows(records) };
  if (saturation.length) block.saturation = saturation;
  return block;
}

export function isEmptyBlock(b: RoutingBlock): boolean {
  return b.rows.length === 0 && !b.saturation?.length;
}

/** The runs a panel shows: those asked for (that exist), or every run when none was asked for. */
export function selectRuns(all: readonly RunInfo[], runIds: readonly string[]): RunInfo[] {
  if (!runIds.length) return [...all];
  const want = new Set(runIds);
  return all.filter((r) => want.has(r.id));
}
