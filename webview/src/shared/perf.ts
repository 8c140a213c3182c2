// Per-phase timings for the benchmarks (bench/webview_points.mjs, bench/results_open.mjs read them
// back as performance.measure entries). Off unless the page sets window.__moelabPerf, so that a
// long-lived panel never accumulates entries.
function enabled(): boolean {
  return (globalThis as { __moelabPerf?: unknown }).__moelabPerf === true;
}

/** Runs fn, recorded as the measure `name` when the benchmarks ask for it. */
export function timed<T>(name: string, fn: () => T): T {
  if (!enabled()) return fn();
  const start = performance.now();
  try {
    return fn();
  } finally {
    performance.measure(name, { start, end: performance.now() });
  }
}
