// Every (run, metric) curve of the dashboard, in growable typed arrays so that
// live appends extend a curve (and its smoothing) in place instead of rebuilding it.
// A fresh curve takes the message's typed columns as they are when they need no filtering
// (copied only before its first write): on this machine's memory, copying a million points'
// columns was the largest part of the dashboard's first paint.
import type { MetricBlock, XAxisMode } from '../protocol';
import { EmaState, smoothInto } from '../shared/smoothing';
import { lowerBound } from '../shared/decimate';

/** A column as Float64Array, null as NaN (a gap), so one typed loop serves plain and typed messages. */
function asTyped(a: ArrayLike<number | null>): Float64Array {
  return a instanceof Float64Array ? a : Float64Array.from({ length: a.length }, (_, i) => a[i] ?? NaN);
}

/** Steps strictly increasing, every value finite. The loop alone in its function: V8 optimizes it on
 *  its first call (OSR), and code after it without type feedback would deoptimize on every call. */
function risingAndFinite(steps: Float64Array, ys: Float64Array): boolean {
  let prev = -Infinity;
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    if (!(step > prev) || !Number.isFinite(ys[i])) return false;
    prev = step;
  }
  return true;
}

function grow(a: Float64Array, need: number): Float64Array {
  if (need <= a.length) return a;
  const b = new Float64Array(Math.max(need, a.length * 2, 64));
  b.set(a);
  return b;
}

export class Series {
  n = 0;
  step: Float64Array = new Float64Array(0);
  tokens: Float64Array = new Float64Array(0);
  flops: Float64Array = new Float64Array(0);
  time: Float64Array = new Float64Array(0);
  y: Float64Array = new Float64Array(0);
  smooth: Float64Array = new Float64Array(0);
  /** Where the run starts on the "since the seed" axes (RunSummary.sinceSeed). */
  offset = { tokens: 0, flops: 0 };
  /** `time` holds the sent clock; the time axis is seconds since t0, the run's first record. */
  t0 = 0;
  /** The columns are still the message's own arrays (adopted, not copied): copy before writing. */
  private borrowed = false;
  private ema: EmaState;
  /** Bumped when points are rewritten in place (a resumed run), so shifted copies are redone. */
  private edits = 0;
  private shifted = { src: new Float64Array(0), by: 0, n: 0, edits: 0, out: new Float64Array(0) };

  constructor(
    readonly runId: string,
    readonly metric: string,
    private weight: number,
  ) {
    this.ema = new EmaState(weight);
  }

  x(mode: XAxisMode): Float64Array {
    switch (mode) {
      case 'step':
        return this.step;
      case 'tokens':
        return this.tokens;
      case 'flops':
        return this.flops;
      case 'time':
        return this.shift(this.time, -this.t0);
      case 'tokensSinceSeed':
        return this.shift(this.tokens, this.offset.tokens);
      case 'flopsSinceSeed':
        return this.shift(this.flops, this.offset.flops);
    }
  }

  /** src + by, cached (one shifted axis at a time) and extended in place as points are appended. */
  private shift(src: Float64Array, by: number): Float64Array {
    if (by === 0) return src;
    const c = this.shifted;
    const from = c.src === src && c.by === by && c.edits === this.edits && c.n <= this.n ? c.n : 0;
    if (from === this.n) return c.out;
    if (c.out.length < src.length) {
      const out = new Float64Array(src.length);
      out.set(c.out.subarray(0, from));
      c.out = out;
    }
    for (let i = from; i < this.n; i++) c.out[i] = src[i] + by;
    Object.assign(c, { src, by, n: this.n, edits: this.edits });
    return c.out;
  }

  reserve(extra: number): void {
    const need = this.n + extra;
    if (this.borrowed) {
      this.borrowed = false;
      const size = Math.max(need, this.n * 2, 64);
      for (const k of ['step', 'tokens', 'flops', 'time', 'y'] as const) {
        const own = new Float64Array(size);
        own.set(this[k].subarray(0, this.n));
        this[k] = own;
      }
    }
    this.step = grow(this.step, need);
    this.tokens = grow(this.tokens, need);
    this.flops = grow(this.flops, need);
    this.time = grow(this.time, need);
    this.y = grow(this.y, need);
    this.smooth = grow(this.smooth, need);
  }

  /** Bulk append of a column (the common, in-order case without per-point calls). */
  pushColumn(
    steps: ArrayLike<number>,
    tokens: ArrayLike<number | null>,
    flops: ArrayLike<number | null>,
    times: ArrayLike<number | null>,
    ys: ArrayLike<number | null>,
    t0: number,
  ): void {
    if (this.n === 0) this.t0 = t0;
    const cols = [asTyped(steps), asTyped(tokens), asTyped(flops), asTyped(times), asTyped(ys)] as const;
    if (this.adopt(...cols)) return;
    this.reserve(steps.length);
    this.pushTyped(...cols);
  }

  /**
   * A fresh series takes typed columns without a copy when nothing is to be filtered out: steps
   * strictly increasing and every value finite (a train block of one metric, always logged).
   */
  private adopt(
    steps: Float64Array,
    tokens: Float64Array,
    flops: Float64Array,
    times: Float64Array,
    ys: Float64Array,
  ): boolean {
    const len = steps.length;
    if (this.n !== 0 || len === 0 || !risingAndFinite(steps, ys)) return false;
    Object.assign(this, { step: steps, tokens, flops, time: times, y: ys, n: len, borrowed: true });
    this.smooth = grow(this.smooth, len);
    this.ema.extend(ys, 0, len, this.smooth);
    return true;
  }

  /** The append loop, on typed columns (NaN marks a gap), which V8 keeps on its fast path. */
  private pushTyped(
    steps: Float64Array,
    tokens: Float64Array,
    flops: Float64Array,
    times: Float64Array,
    ys: Float64Array,
  ): void {
    const len = steps.length;
    // Copy the in-order points, then smooth them in one pass; a point that goes back in steps
    // (a resumed run) takes the general path, after the smoothing of what came before it.
    let from = this.n;
    for (let i = 0; i < len; i++) {
      const y = ys[i];
      if (!Number.isFinite(y)) continue;
      const step = steps[i];
      if (this.n > 0 && step <= this.step[this.n - 1]) {
        this.ema.extend(this.y, from, this.n, this.smooth);
        this.push(step, tokens[i], times[i], y, flops[i]);
        from = this.n;
        continue;
      }
      const k = this.n++;
      this.step[k] = step;
      this.tokens[k] = tokens[i];
      this.flops[k] = flops[i];
      this.time[k] = times[i];
      this.y[k] = y;
    }
    this.ema.extend(this.y, from, this.n, this.smooth);
  }

  push(step: number, tokens: number, time: number, y: number, flops = NaN): void {
    this.reserve(1);
    if (this.n > 0 && step <= this.step[this.n - 1]) {
      // A run resumed from an earlier checkpoint logs those steps again: the new
      // points replace the old ones, as the curve continues from the checkpoint.
      this.n = lowerBound(this.step, this.n, step);
      this.edits++;
      this.resmooth();
    }
    const i = this.n++;
    this.step[i] = step;
    this.tokens[i] = tokens;
    this.flops[i] = flops;
    this.time[i] = time;
    this.y[i] = y;
    this.smooth[i] = this.ema.next(y);
  }

  setSmoothing(weight: number): void {
    this.weight = weight;
    this.resmooth();
  }

  private resmooth(): void {
    this.ema = smoothInto(this.y, this.n, this.weight, this.smooth);
  }
}

export class SeriesStore {
  private readonly series = new Map<string, Series>();
  private readonly t0 = new Map<string, number>();
  private readonly offsets = new Map<string, { tokens: number; flops: number }>();
  private weight = 0;
  /** Bumped on every change, so derived views (group bands) know when to recompute. */
  version = 0;

  setSmoothing(weight: number): void {
    this.weight = weight;
    for (const s of this.series.values()) s.setSmoothing(weight);
    this.version++;
  }

  /** A run's start on the "since the seed" axes, for its series now and those still to come. */
  setOffset(runId: string, offset: { tokens: number; flops: number }): void {
    const o = { tokens: offset.tokens, flops: offset.flops };
    this.offsets.set(runId, o);
    for (const s of this.series.values()) if (s.runId === runId) s.offset = o;
    this.version++;
  }

  get(runId: string, metric: string): Series | undefined {
    return this.series.get(`${runId}\u0000${metric}`);
  }

  metrics(): string[] {
    return [...new Set([...this.series.values()].map((s) => s.metric))];
  }

  runIds(): string[] {
    return [...new Set([...this.series.values()].map((s) => s.runId))];
  }

  /** Appends a block; returns the metric ids it touched. */
  append(block: MetricBlock): Set<string> {
    const touched = new Set<string>();
    const n = block.step.length;
    if (n === 0) return touched;
    // Time axis = seconds since the run's first record, whatever clock the engine used.
    let t0 = this.t0.get(block.runId);
    if (t0 === undefined) {
      for (let i = 0; i < n; i++) {
        const t = block.time[i];
        if (t !== null && Number.isFinite(t)) {
          t0 = t;
          break;
        }
      }
      if (t0 !== undefined) this.t0.set(block.runId, t0);
    }
    const base = t0 ?? 0;
    // Blocks from senders that predate the FLOPs count: a column of gaps.
    const flops = block.flops ?? new Float64Array(n).fill(NaN);
    for (const [key, column] of Object.entries(block.values)) {
      const metric = `${block.split}/${key}`;
      const id = `${block.runId}\u0000${metric}`;
      let s = this.series.get(id);
      if (!s) {
        s = new Series(block.runId, metric, this.weight);
        s.offset = this.offsets.get(block.runId) ?? s.offset;
        this.series.set(id, s);
      }
      s.pushColumn(block.step, block.tokens, flops, block.time, column, base);
      touched.add(metric);
    }
    this.version++;
    return touched;
  }
}
