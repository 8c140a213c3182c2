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
}

export function smoothInto(ys: ArrayLike<number>, n: number, weight: number, out: Float64Array): EmaState {
  const ema = new EmaState(weight);
  for (let i = 0; i < n; i++) out[i] = ema.next(ys[i]);
  return ema;
}
