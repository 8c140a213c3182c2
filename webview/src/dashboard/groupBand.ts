// Runs of one experiment (seeds) drawn as their mean with a min–max band.
// Members are resampled by linear interpolation on a shared grid of x values.
import { lowerBound } from '../shared/decimate';

export interface Curve {
  xs: ArrayLike<number>;
  ys: ArrayLike<number>;
  n: number;
}

export interface Band {
  xs: Float64Array;
  mean: Float64Array;
  lo: Float64Array;
  hi: Float64Array;
  n: number;
}

function interpolate(c: Curve, x: number): number {
  const i = lowerBound(c.xs, c.n, x);
  if (i >= c.n) return NaN;
  if (c.xs[i] === x) return c.ys[i];
  if (i === 0) return NaN;
  const x0 = c.xs[i - 1],
    x1 = c.xs[i];
  const t = (x - x0) / (x1 - x0);
  return c.ys[i - 1] + t * (c.ys[i] - c.ys[i - 1]);
}

/** The grid is the longest member's x values, thinned to at most maxPoints. */
export function groupBand(members: Curve[], maxPoints = 4000): Band {
  const longest = members.reduce((a, b) => (b.n > a.n ? b : a), members[0] ?? { xs: [], ys: [], n: 0 });
  const stride = Math.max(1, Math.ceil(longest.n / maxPoints));
  const m = Math.ceil(longest.n / stride);
  const band: Band = {
    xs: new Float64Array(m),
    mean: new Float64Array(m),
    lo: new Float64Array(m),
    hi: new Float64Array(m),
    n: 0,
  };
  for (let g = 0; g < longest.n; g += stride) {
    const x = longest.xs[g];
    if (!Number.isFinite(x)) continue;
    let sum = 0,
      count = 0,
      lo = Infinity,
      hi = -Infinity;
    for (const c of members) {
      const y = interpolate(c, x);
      if (!Number.isFinite(y)) continue;
      sum += y;
      count++;
      if (y < lo) lo = y;
      if (y > hi) hi = y;
    }
    if (count === 0) continue;
    const k = band.n++;
    band.xs[k] = x;
    band.mean[k] = sum / count;
    band.lo[k] = lo;
    band.hi[k] = hi;
  }
  return band;
}
