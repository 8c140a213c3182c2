// Stop = SIGTERM (the engine writes a checkpoint on it), then the task is terminated if its
// process is still there after a grace period, or sooner when the user stops waiting. No vscode
// import: the runner passes the task's exit and terminate, the unit test a real child process.
import { log, why } from '../util/log';

/** Long enough for the engine to write a checkpoint of a large model. */
export const STOP_GRACE_MS = 120_000;

export interface Stoppable {
  name: string;
  /** The process to signal; undefined when the task has not reported one (it is terminated at once). */
  pid: number | undefined;
  /** Settles when the process has exited. */
  exit: Promise<unknown>;
  /** Ends it forcibly (a task: TaskExecution.terminate, which kills its process). */
  terminate(): void;
}

/** exited: it ended within the grace period; terminated: it was ended forcibly. */
export type StopOutcome = 'exited' | 'terminated';

export async function gracefulStop(
  target: Stoppable,
  opts: { graceMs?: number; stopWaiting?: Promise<void> } = {},
): Promise<StopOutcome> {
  if (target.pid === undefined) {
    log.info(`stop ${target.name}: no process id, terminating the task`);
    target.terminate();
    return 'terminated';
  }
  try {
    process.kill(target.pid, 'SIGTERM');
  } catch (e) {
    // Already gone (ESRCH) or not ours (EPERM): the task is all that is left to end.
    log.debug(`stop ${target.name}: SIGTERM to ${target.pid} failed, terminating the task: ${why(e)}`);
    target.terminate();
    return 'terminated';
  }
  log.info(`stop ${target.name}: SIGTERM sent to ${target.pid}, waiting for its checkpoint`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceMs = opts.graceMs ?? STOP_GRACE_MS;
  const gaveUp = await Promise.race([
    target.exit.then(
      () => false,
      () => false,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), graceMs);
    }),
    ...(opts.stopWaiting ? [opts.stopWaiting.then(() => true)] : []),
  ]);
  clearTimeout(timer);
  if (!gaveUp) return 'exited';
  log.warn(`stop ${target.name}: still running after SIGTERM, terminating the task`);
  target.terminate();
  return 'terminated';
}
