// M4 decimation (Jugel et al., VLDB 2014): per pixel column keep the first, min,
// max and last point. A line drawn through them is pixel-identical to the full
// line, and the cost is one pass over the visible points, so a million points
// draw in a few milliseconds.

/** Index of the first i with xs[i] >= x (xs ascending, length n). */
export function lowerBound(xs: ArrayLike<number>, n: number, x: number): number {
  return lowerBoundFrom(xs, 0, n, x);
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
  const span = x1 - x0 || 1;
  return out.subarray(0, m4Columns(xs, ys, start, end, x0, columns / span, out));
}

/**
 * The M4 scan into out; returns how many numbers it wrote. The loop alone in its function: V8
 * optimizes it on its first call (OSR), and code after it without type feedback (the subarray)
 * would deoptimize that code again on every call.
 */
function m4Columns(
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  start: number,
  end: number,
  x0: number,
  scale: number,
  out: Float64Array,
): number {
  let o = 0;
  // Column by column: xs is sorted, so a column's end is a binary search, and the scan of its
  // points reads ys only. This halves the work of a per-point column test on a million points.
  for (let i = start; i < end;) {
    const col = Math.floor((xs[i] - x0) * scale);
    // At least one point per column, whatever the rounding of the column's right edge.
    const j = Math.max(i + 1, lowerBoundFrom(xs, i + 1, end, x0 + (col + 1) / scale));
    let iMin = -1,
      iMax = -1;
    let lo = Infinity,
      hi = -Infinity;
    for (let k = i; k < j; k++) {
      const y = ys[k];
      if (y < lo) {
        lo = y;
        iMin = k;
      }
      if (y > hi) {
        hi = y;
        iMax = k;
      }
    }
    // Emit first, min, max, last in index order so the polyline does not zig-zag backwards;
    // NaN points are kept only as the first or last (they break the line there).
    // Four indices in order by a sorting network (a sort call with a comparator per column cost
    // more than the scan itself).
    let a = i,
      b = iMin,
      c = iMax,
      d = j - 1,
      t = 0;
    if (a > b) {
      t = a;
      a = b;
      b = t;
    }
    if (c > d) {
      t = c;
      c = d;
      d = t;
    }
    if (a > c) {
      t = a;
      a = c;
      c = t;
    }
    if (b > d) {
      t = b;
      b = d;
      d = t;
    }
    if (b > c) {
      t = b;
      b = c;
      c = t;
    }
    let prev = -1;
    for (const k of [a, b, c, d]) {
      if (k === prev || k < 0) continue;
      out[o++] = xs[k];
      out[o++] = ys[k];
      prev = k;
    }
    i = j;
  }
  return o;
}

function lowerBoundFrom(xs: ArrayLike<number>, from: number, n: number, x: number): number {
  let lo = from;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
