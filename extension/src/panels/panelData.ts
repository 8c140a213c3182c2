// Shapes the run store's records into protocol messages (vscode-free, tested).
// The store hands us whatever JSON the engine wrote: every value is checked,
// so that what we post always passes the webview's validation.
import type { MetricRecord, RoutingRecord, RunInfo } from '../runs/model';
import type {
  MetricBlock,
  RoutingBlock,
  RoutingRow,
  RunSummary,
  SaturationPoint,
  SeedOffset,
} from '../../../webview/src/protocol';

// The x-axis columns (step, tokens, flops, time) are not metrics of their own.
const SKIP = new Set(['step', 'tokens', 'flops', 'time', 'split', 'domain']);

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** color: the run's colour from runs/runColors.ts (assigned over the whole store); sinceSeed: runs/sinceSeed.ts. */
export function toRunSummary(run: RunInfo, color?: string, sinceSeed?: SeedOffset): RunSummary {
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
    ...(sinceSeed ? { sinceSeed } : {}),
  };
}

interface Row {
  step: number;
  tokens: number;
  flops: number;
  time: number;
  cells: [string, number][];
}

/** A record's numbers (NaN where absent), or undefined when it has no step or no metric. */
function toRow(r: MetricRecord): Row | undefined {
  const step = num(r.step);
  if (step === undefined) return undefined;
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
  if (!cells.length) return undefined;
  return { step, tokens: num(r.tokens) ?? NaN, flops: num(r.flops) ?? NaN, time: num(r.time) ?? NaN, cells };
}

/**
 * One split's rows as Float64Array columns (NaN = missing), all views of ONE ArrayBuffer: VS Code
 * sends a message's typed arrays as raw buffers and transfers them into the webview's frame, so a
 * million points arrive as a few memory blocks instead of a structured clone of millions of numbers.
 */
function packBlock(runId: string, split: 'train' | 'eval', rows: readonly Row[]): MetricBlock {
  const keys = new Map<string, number>();
  for (const row of rows) for (const [k] of row.cells) if (!keys.has(k)) keys.set(k, keys.size);
  const n = rows.length;
  const buffer = new ArrayBuffer((4 + keys.size) * n * 8);
  const column = (i: number): Float64Array => new Float64Array(buffer, i * n * 8, n);
  const step = column(0);
  const tokens = column(1);
  const flops = column(2);
  const time = column(3);
  const cols = [...keys.keys()].map((_, j) => column(4 + j).fill(NaN));
  for (let i = 0; i < n; i++) {
    const row = rows[i];
    step[i] = row.step;
    tokens[i] = row.tokens;
    flops[i] = row.flops;
    time[i] = row.time;
    for (const [k, v] of row.cells) cols[keys.get(k) as number][i] = v;
  }
  const values: Record<string, Float64Array> = {};
  for (const [k, j] of keys) values[k] = cols[j];
  return { runId, split, step, tokens, flops, time, values };
}

/** metrics.jsonl records → one columnar block per split (train / eval), typed arrays only. */
export function toMetricBlocks(runId: string, records: readonly MetricRecord[]): MetricBlock[] {
  const rows: Record<'train' | 'eval', Row[]> = { train: [], eval: [] };
  for (const r of records) {
    const row = toRow(r);
    if (row) rows[r.split === 'eval' ? 'eval' : 'train'].push(row);
  }
  return (['train', 'eval'] as const).filter((s) => rows[s].length).map((s) => packBlock(runId, s, rows[s]));
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
