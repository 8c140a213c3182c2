// Main-thread CPU time of a webview between two performance marks, from a Chromium trace (CDP
// Tracing): the tasks' thread time (tdur), which other jobs on a shared machine do not inflate the
// way they inflate wall-clock time. Used by bench/webview_points.mjs and bench/results_open.mjs.

/**
 * Runs `act` (which must call performance.mark('bench:start') and, when done,
 * performance.mark('bench:end') in the page) under tracing; returns its result and `cpuMs`: the
 * thread time of the renderer main thread's tasks that ran wholly between the marks.
 */
export async function withMainThreadCpu(page, act) {
  const cdp = await page.context().newCDPSession(page);
  const events = [];
  cdp.on('Tracing.dataCollected', (e) => events.push(...e.value));
  await cdp.send('Tracing.start', {
    categories: 'disabled-by-default-devtools.timeline,blink.user_timing',
    transferMode: 'ReportEvents',
  });
  const result = await act();
  const complete = new Promise((resolve) => cdp.once('Tracing.tracingComplete', resolve));
  await cdp.send('Tracing.end');
  await complete;
  await cdp.detach();
  const mark = (name) => events.find((e) => e.name === name && String(e.cat).includes('user_timing'));
  const start = mark('bench:start');
  const end = mark('bench:end');
  if (!start || !end) throw new Error('trace: the bench marks are missing');
  // The page's main thread is the one that recorded the marks.
  const tasks = events.filter(
    (e) =>
      e.name === 'RunTask' &&
      e.ph === 'X' &&
      e.pid === start.pid &&
      e.tid === start.tid &&
      e.ts >= start.ts &&
      e.ts + e.dur <= end.ts,
  );
  const cpuMs = tasks.reduce((s, e) => s + (e.tdur ?? e.dur), 0) / 1000;
  return { result, cpuMs };
}
