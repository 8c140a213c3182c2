// The y range of a chart: every visible value, or with "ignore outliers" the 2nd–98th percentile
// of a sample of them, so one loss spike does not flatten every curve against the floor.
// Pure (no DOM), so that the numbers a user reads off the axis are tested on their own.

/** Below this many samples percentiles mean little: the full range is used. */
export const ROBUST_MIN_SAMPLES = 21;
export const ROBUST_LOW = 0.02;
export const ROBUST_HIGH = 0.98;

/**
 * `decimated`: M4 columns as decimateM4 returns them ([x, y] pairs, y at odd indices);
 * `samples`: raw values of the visible window (used when ignoreOutliers). Padded by 5% of the
 * span (linear) or a factor 1.05 (log); non-positive values are skipped on a log scale.
 */
export function yDomain(
  decimated: readonly Float64Array[],
  samples: readonly number[],
  logScale: boolean,
  ignoreOutliers: boolean,
): [number, number] {
  const ok = (v: number): boolean => Number.isFinite(v) && (!logScale || v > 0);
  let lo = Infinity,
    hi = -Infinity;
  if (ignoreOutliers && samples.length >= ROBUST_MIN_SAMPLES) {
    const s = samples.filter(ok).sort((a, b) => a - b);
    if (s.length) {
      lo = s[Math.floor(s.length * ROBUST_LOW)];
      hi = s[Math.min(s.length - 1, Math.ceil(s.length * ROBUST_HIGH))];
    }
  } else {
    for (const d of decimated)
      for (let i = 1; i < d.length; i += 2) {
        const v = d[i];
        if (!ok(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
  }
  if (!Number.isFinite(lo)) return logScale ? [0.1, 10] : [0, 1];
  if (logScale) return lo === hi ? [lo / 2, hi * 2] : [lo / 1.05, hi * 1.05];
  const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.1 || 1;
  return [lo - pad, hi + pad];
}
