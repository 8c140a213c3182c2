// The Stop flow (extension/src/jobs/gracefulStop.ts) on real child processes standing in for the
// task's engine process: SIGTERM, the grace period, then the task is terminated.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { gracefulStop, type Stoppable } from '../../extension/src/jobs/gracefulStop';
import { useLog } from '../../extension/src/util/log';
import { captureLog } from './fixtures';

interface Child {
  proc: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  out: () => string;
}

/** A node process running `onTerm` on SIGTERM; resolves once it listens (prints "ready"). */
async function child(onTerm: string): Promise<Child> {
  const proc = spawn(
    process.execPath,
    ['-e', `process.on('SIGTERM', () => { ${onTerm} }); console.log('ready'); setInterval(() => {}, 1000);`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => (out += d));
  const exit = once(proc, 'exit').then(([code, signal]) => ({ code, signal }));
  while (!out.includes('ready')) await once(proc.stdout!, 'data');
  return { proc, exit, out: () => out };
}

/** The task as the runner hands it over; terminate kills the process as VS Code's terminate does. */
function task(c: Child): Stoppable & { terminated: number } {
  const t = {
    name: 'train',
    pid: c.proc.pid,
    exit: c.exit,
    terminated: 0,
    terminate: () => {
      t.terminated++;
      c.proc.kill('SIGKILL');
    },
  };
  return t;
}

describe('Stop: SIGTERM, grace period, then terminate', () => {
  it('a process that saves and exits on SIGTERM is left to exit; the task is not terminated', async () => {
    const c = await child("console.log('checkpoint saved'); process.exit(0);");
    const t = task(c);
    assert.equal(await gracefulStop(t, { graceMs: 20_000 }), 'exited');
    assert.deepEqual(await c.exit, { code: 0, signal: null });
    assert.equal(t.terminated, 0);
    assert.match(c.out(), /checkpoint saved/);
  });

  it('a process that ignores SIGTERM is terminated when the grace period ends, not before', async () => {
    const { lines, log } = captureLog();
    const restore = useLog(log);
    const c = await child('/* ignored */');
    const t = task(c);
    const started = Date.now();
    try {
      assert.equal(await gracefulStop(t, { graceMs: 400 }), 'terminated');
    } finally {
      restore.dispose();
    }
    assert.ok(Date.now() - started >= 400, 'terminated before the grace period ended');
    assert.equal(t.terminated, 1);
    assert.deepEqual(await c.exit, { code: null, signal: 'SIGKILL' });
    assert.ok(
      lines.some((l) => l.startsWith('warn ') && /still running after SIGTERM/.test(l)),
      lines.join('\n'),
    );
  });

  it('the user stops waiting: terminated at once', async () => {
    const c = await child('/* ignored */');
    const t = task(c);
    const started = Date.now();
    const outcome = await gracefulStop(t, { graceMs: 60_000, stopWaiting: Promise.resolve() });
    assert.equal(outcome, 'terminated');
    assert.ok(Date.now() - started < 10_000);
    assert.deepEqual(await c.exit, { code: null, signal: 'SIGKILL' });
  });

  it('no process id, or a process already gone: the task is terminated without waiting', async () => {
    const c = await child('process.exit(0);');
    c.proc.kill('SIGTERM');
    await c.exit;
    const gone = task(c);
    assert.equal(await gracefulStop(gone, { graceMs: 60_000 }), 'terminated');
    assert.equal(gone.terminated, 1);
    let terminated = 0;
    const noPid = {
      name: 'x',
      pid: undefined,
      exit: new Promise(() => {}),
      terminate: () => void terminated++,
    };
    assert.equal(await gracefulStop(noPid), 'terminated');
    assert.equal(terminated, 1);
  });
});
