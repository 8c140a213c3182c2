// TensorBoard's smoothing: an exponential moving average, debiased so that the
// first points are not dragged towards zero. Incremental, so that appending live
// points extends the smoothed curve without recomputing it.
export class EmaState {
  private last = 0;
  private debias = 0;

  constructor(private readonly weight: number) {}

  next(y: number): number {
    if (!Number.isFinite(y)) return NaN;
    if (this.weight <= 0) return y;
    this.last = this.last * this.weight + (1 - this.weight) * y;
    this.debias = this.debias * this.weight + (1 - this.weight);
    return this.last / this.debias;
  }

  /** `next` over finite ys[from..to) into out[from..to). */
  extend(ys: Float64Array, from: number, to: number, out: Float64Array): void {
    const w = this.weight;
    if (w <= 0) {
      out.set(ys.subarray(from, to), from);
      return;
    }
    const last = emaRun(ys, from, to, out, w, this.last, this.debias);
    this.debias = debiasAfter(to - from, w, this.debias);
    this.last = last;
  }
}

// The loops below are alone in their functions, returning one number: V8 optimizes a long loop on
// its first call (OSR), and code after it that has never run (no type feedback, such as the state's
// stores) would throw that code away again on every call.

/** The smoothed ys[from..to) into out; returns the EMA's last (biased) value. */
function emaRun(
  ys: Float64Array,
  from: number,
  to: number,
  out: Float64Array,
  w: number,
  last: number,
  debias: number,
): number {
  for (let i = from; i < to; i++) {
    last = last * w + (1 - w) * ys[i];
    debias = debias * w + (1 - w);
    out[i] = last / debias;
  }
  return last;
}

/** The debias term after k more points, by the same steps as emaRun (bit-identical). */
function debiasAfter(k: number, w: number, debias: number): number {
  for (let i = 0; i < k; i++) debias = debias * w + (1 - w);
  return debias;
}

export function smoothInto(ys: ArrayLike<number>, n: number, weight: number, out: Float64Array): EmaState {
  const ema = new EmaState(weight);
  for (let i = 0; i < n; i++) out[i] = ema.next(ys[i]);
  return ema;
}
