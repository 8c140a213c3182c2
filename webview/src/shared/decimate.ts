// M4 decimation (Jugel et al., VLDB 2014): per pixel column keep the first, min,
// max and last point. A line drawn through them is pixel-identical to the full
// line, and the cost is one pass over the visible points, so a million points
// draw in a few milliseconds.

/** Index of the first i with xs[i] >= x (xs ascending, length n). */
export function lowerBound(xs: ArrayLike<number>, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Decimate points with x in [x0, x1] (plus one point either side so lines run to
 * the edges) into at most 4 points per pixel column. Points whose y is NaN are
 * kept as NaN breaks. Returns interleaved [x, y, x, y, ...] in data units.
 */
export function decimateM4(
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  n: number,
  x0: number,
  x1: number,
  columns: number,
): Float64Array {
  const start = Math.max(0, lowerBound(xs, n, x0) - 1);
  const end = Math.min(n, lowerBound(xs, n, x1) + 1);
  const count = end - start;
  if (count <= 0) return new Float64Array(0);
  if (count <= columns * 4) {
    const out = new Float64Array(count * 2);
    for (let i = start, j = 0; i < end; i++, j += 2) {
      out[j] = xs[i];
      out[j + 1] = ys[i];
    }
    return out;
  }
  const out = new Float64Array((columns + 2) * 8 + 16);
  let o = 0;
  const span = x1 - x0 || 1;
  const scale = columns / span;
  let col = NaN;
  let iFirst = -1, iMin = -1, iMax = -1, iLast = -1;
  const flush = (): void => {
    if (iFirst < 0) return;
    // Emit in index order so the polyline does not zig-zag backwards.
    const idx = [iFirst, iMin, iMax, iLast].sort((a, b) => a - b);
    let prev = -1;
    for (const k of idx) {
      if (k === prev || k < 0) continue;
      if (o + 2 > out.length) break;
      out[o++] = xs[k];
      out[o++] = ys[k];
      prev = k;
    }
  };
  for (let i = start; i < end; i++) {
    const y = ys[i];
    const c = Math.floor((xs[i] - x0) * scale);
    if (c !== col) {
      flush();
      col = c;
      iFirst = iMin = iMax = iLast = i;
      if (Number.isNaN(y)) iMin = iMax = -1;
      continue;
    }
    iLast = i;
    if (Number.isNaN(y)) continue;
    if (iMin < 0 || y < ys[iMin]) iMin = i;
    if (iMax < 0 || y > ys[iMax]) iMax = i;
  }
  flush();
  return out.subarray(0, o);
}
