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
    let last = this.last,
      debias = this.debias;
    for (let i = from; i < to; i++) {
      last = last * w + (1 - w) * ys[i];
      debias = debias * w + (1 - w);
      out[i] = last / debias;
    }
    this.last = last;
    this.debias = debias;
  }
}

export function smoothInto(ys: ArrayLike<number>, n: number, weight: number, out: Float64Array): EmaState {
  const ema = new EmaState(weight);
  for (let i = 0; i < n; i++) out[i] = ema.next(ys[i]);
  return ema;
}
