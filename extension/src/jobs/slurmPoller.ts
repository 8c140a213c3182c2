// Polls `moelab slurm status` while a Slurm job is queued or running, and not otherwise: every poll
// starts a Python process that asks slurmctld, which a cluster's admins notice when it is frequent.
// No vscode import: the clock, the fetch and the trust check are injected (tests drive them).
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseSlurmStatus, type SlurmJobState, slurmStatusArgs } from './slurmArgs';
import { engineInvocation } from './taskArgs';
import { log, why } from '../util/log';

/** The engine waits 30 s per Slurm command; a few of them per poll, then give up. */
export const STATUS_TIMEOUT_MS = 90_000;

export interface SlurmPollerOptions {
  /** Runs `moelab slurm status` for every runs directory; rejects or resolves [] on failure. */
  fetch: () => Promise<SlurmJobState[]>;
  /** False in Restricted Mode: then no process is started at all. */
  trusted: () => boolean;
  onUpdate: (states: readonly SlurmJobState[]) => void;
  /** Minimum time between two polls. */
  intervalMs?: number;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export class SlurmPoller {
  private states: SlurmJobState[] = [];
  private timer: unknown;
  private inFlight = false;
  /** A kick that arrived during a poll: poll again after it, whatever it found. */
  private kickedDuringPoll = false;
  private lastStart = -Infinity;
  private disposed = false;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  constructor(private readonly opts: SlurmPollerOptions) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.now = opts.now ?? Date.now;
    this.setTimer = opts.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = opts.clearTimer ?? ((h) => clearTimeout(h as ReturnType<typeof setTimeout>));
  }

  /** The last answer. */
  current(): readonly SlurmJobState[] {
    return this.states;
  }

  /** Whether a poll is scheduled or running. */
  get polling(): boolean {
    return this.timer !== undefined || this.inFlight;
  }

  /**
   * Something may be pending (a submission, a queued run in the view): poll soon, but never sooner
   * than `intervalMs` after the previous poll. Polling then goes on while any job is active.
   */
  kick(): void {
    if (this.disposed || !this.opts.trusted()) return;
    if (this.inFlight) {
      this.kickedDuringPoll = true;
      return;
    }
    if (this.timer !== undefined) return;
    this.schedule(Math.max(0, this.lastStart + this.intervalMs - this.now()));
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer !== undefined) this.clearTimer(this.timer);
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    this.timer = this.setTimer(() => {
      this.timer = undefined;
      void this.poll();
    }, ms);
  }

  /** One poll now; exposed for tests and for an explicit refresh. */
  async poll(): Promise<void> {
    if (this.disposed || this.inFlight || !this.opts.trusted()) return;
    this.inFlight = true;
    this.kickedDuringPoll = false;
    this.lastStart = this.now();
    let states: SlurmJobState[] | undefined;
    try {
      states = await this.opts.fetch();
    } catch (e) {
      log.warn(`Slurm poll failed (the last answer stays; the next poll retries): ${why(e)}`);
      states = undefined;
    } finally {
      this.inFlight = false;
    }
    if (this.disposed) return;
    if (states) {
      this.states = states;
      this.opts.onUpdate(states);
    }
    const pending = (states ?? this.states).some((s) => s.active);
    if ((pending || this.kickedDuringPoll) && this.timer === undefined && this.opts.trusted())
      this.schedule(this.intervalMs);
    this.kickedDuringPoll = false;
  }
}

async function subdirs(d: string): Promise<string[]> {
  const entries = await fsp.readdir(d, { withFileTypes: true }).catch((e: unknown) => {
    log.trace(`no run folders in ${d}: ${why(e)}`);
    return [];
  });
  return entries.filter((e) => e.isDirectory()).map((e) => path.join(d, e.name));
}

/** Where the engine may have written slurm.json: <runs>/<id>/ and <runs>/.slurm/<experiment>/. */
async function recordDirs(runsRoot: string): Promise<string[]> {
  return [...(await subdirs(runsRoot)), ...(await subdirs(path.join(runsRoot, '.slurm')))];
}

function isFile(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** Whether `runsRoot` holds a job record (runs/<id>/slurm.json or runs/.slurm/<name>/slurm.json). */
export async function hasSlurmRecords(runsRoot: string): Promise<boolean> {
  for (const dir of await recordDirs(runsRoot)) {
    if (await isFile(path.join(dir, 'slurm.json'))) return true;
  }
  return false;
}

/**
 * `<python> -m moelab slurm status --runs=ROOT --json` for each runs directory that has a job
 * record (no Python is started for the others), as a child process with an argument array and a
 * timeout. A directory whose status fails is left out of the answer, not the whole answer.
 */
export async function fetchSlurmStatus(
  python: string,
  runsRoots: readonly string[],
  cwd: string,
  timeoutMs = STATUS_TIMEOUT_MS,
): Promise<SlurmJobState[]> {
  const byJob = new Map<string, SlurmJobState>();
  for (const root of new Set(runsRoots.map((r) => path.resolve(cwd, r)))) {
    if (!(await hasSlurmRecords(root))) continue;
    const inv = engineInvocation(python, slurmStatusArgs(root, cwd));
    const stdout = await new Promise<string | undefined>((resolve) => {
      execFile(
        inv.command,
        inv.args,
        {
          cwd,
          env: { ...process.env, ...inv.env },
          timeout: timeoutMs,
          windowsHide: true,
          maxBuffer: 16 * 1024 * 1024,
        },
        (err, out) => resolve(err ? undefined : out),
      );
    });
    if (stdout === undefined) continue;
    for (const s of parseSlurmStatus(stdout)) byJob.set(s.jobId, s);
  }
  return [...byJob.values()];
}

/**
 * Whether `runsRoot` holds a job record with no run.json beside it: a script submitted with
 * `--script` that has not started yet, or an experiment (its record lives under .slurm/). Such a
 * job may still be queued, which only Slurm can say, so one poll is worth it.
 */
export async function hasRecordsWithoutRun(runsRoot: string): Promise<boolean> {
  for (const dir of await recordDirs(runsRoot)) {
    if ((await isFile(path.join(dir, 'slurm.json'))) && !(await isFile(path.join(dir, 'run.json'))))
      return true;
  }
  return false;
}
