// The run store: finds runs under the runs directories, tails their metrics and routing files,
// and tells listeners what changed. No vscode runtime import (only types), so node tests drive
// it directly; the extension feeds it FileSystemWatcher events via `schedule()`.
//
// Memory: every parsed record is kept per run, but each list is capped (default 200k records).
// Past the cap, everything but the newest half is thinned to every other logged step, again
// each time the cap is reached, so older stretches end up sparser (roughly log-spaced) while
// eval records are always kept and the newest half keeps full resolution. A 1 GB metrics file
// thus costs a bounded amount of memory and its curves keep their shape.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Emitter } from '../util/emitter';
import type { MetricRecord, RoutingRecord, RunAppend, RunInfo, RunStoreApi, ShownStatus } from './model';
import {
  isMetricRecord,
  isPidAlive,
  isRoutingRecord,
  isStale,
  parseRunJson,
  TERMINAL_STATUSES,
} from './records';
import { JsonlTailer } from './tailer';
import { log, why } from '../util/log';

export interface RunStoreOptions {
  /** Absolute paths of the runs directories (re-read at every scan, so settings changes apply). */
  roots: () => string[];
  host?: string;
  isPidAlive?: (pid: number) => boolean;
  maxMetricRecords?: number;
  maxRoutingRecords?: number;
  /** How deep below a root run.json files are looked for (runs/<id>/ or runs/<experiment>/<id>/). */
  scanDepth?: number;
  /** Debounce for `schedule()`. */
  debounceMs?: number;
  /** Poll interval while some run is live, because file watchers miss appends on network file systems. */
  livePollMs?: number;
}

export interface StatusChange {
  run: RunInfo;
  previous: string;
  current: string;
}

interface RunEntry {
  info: RunInfo;
  runJsonMtime: number;
  metricsTailer: JsonlTailer<MetricRecord>;
  routingTailer: JsonlTailer<RoutingRecord>;
  metrics: MetricRecord[];
  routing: RoutingRecord[];
  /** Status as last shown: run.json's, or "stale" when it claims running with a dead pid. */
  shownStatus: ShownStatus;
}

/** The status a user sees (ShownStatus). */
export function shownStatus(run: RunInfo): ShownStatus {
  return run.stale === true ? 'stale' : run.status;
}

/**
 * Thins records older than the newest `cap / 2` to every other distinct step.
 * Eval records survive: they are few and each one matters.
 */
export function decimate<T extends { step: number; split?: unknown }>(records: T[], cap: number): T[] {
  let out = records;
  while (out.length > cap) {
    const next = thinOnce(out, cap);
    if (next.length >= out.length) break;
    out = next;
  }
  return out;
}

function thinOnce<T extends { step: number; split?: unknown }>(records: T[], cap: number): T[] {
  const keepTail = Math.floor(cap / 2);
  const cut = records.length - keepTail;
  const out: T[] = [];
  let lastStep: number | undefined;
  let ordinal = -1;
  for (let i = 0; i < cut; i++) {
    const r = records[i];
    if (r.step !== lastStep) {
      ordinal++;
      lastStep = r.step;
    }
    if (ordinal % 2 === 0 || r.split === 'eval') out.push(r);
  }
  for (let i = cut; i < records.length; i++) out.push(records[i]);
  // Pathological case (one step with more records than the cap): fall back to plain striding.
  return out.length > cap ? out.filter((_, i) => i % 2 === 0 || i >= out.length - keepTail) : out;
}

const APPEND_FLUSH = 10_000;

export class RunStore implements RunStoreApi {
  private readonly runs = new Map<string, RunEntry>();
  private readonly changeRuns = new Emitter<void>();
  private readonly append = new Emitter<RunAppend>();
  private readonly statusChange = new Emitter<StatusChange>();
  private readonly host: string;
  private readonly alive: (pid: number) => boolean;
  private readonly maxMetrics: number;
  private readonly maxRouting: number;
  private queue: Promise<void> = Promise.resolve();
  private debounce: ReturnType<typeof setTimeout> | undefined;
  private livePoll: ReturnType<typeof setInterval> | undefined;
  private scannedOnce = false;
  private disposed = false;

  readonly onDidChangeRuns = this.changeRuns.event;
  readonly onDidAppend = this.append.event;
  /** Status transitions seen live (never for the runs found at the first scan). */
  readonly onDidChangeStatus = this.statusChange.event;

  constructor(private readonly opts: RunStoreOptions) {
    this.host = opts.host ?? os.hostname();
    this.alive = opts.isPidAlive ?? isPidAlive;
    this.maxMetrics = opts.maxMetricRecords ?? 200_000;
    this.maxRouting = opts.maxRoutingRecords ?? 200_000;
  }

  list(): RunInfo[] {
    return [...this.runs.values()].map((e) => e.info);
  }

  get(runId: string): RunInfo | undefined {
    return this.runs.get(runId)?.info;
  }

  metrics(runId: string): readonly MetricRecord[] {
    return this.runs.get(runId)?.metrics ?? [];
  }

  routing(runId: string): readonly RoutingRecord[] {
    return this.runs.get(runId)?.routing ?? [];
  }

  badLines(runId: string): { metrics: number; routing: number } {
    const e = this.runs.get(runId);
    return { metrics: e?.metricsTailer.badLines ?? 0, routing: e?.routingTailer.badLines ?? 0 };
  }

  /** The newest training record (the one the tree and status bar summarise). */
  latestTrain(runId: string): MetricRecord | undefined {
    const m = this.runs.get(runId)?.metrics ?? [];
    for (let i = m.length - 1; i >= 0; i--) if (m[i].split !== 'eval') return m[i];
    return undefined;
  }

  /** Rescan and tail everything now; resolves when done. Calls are serialised. */
  refresh(): Promise<void> {
    return this.enqueue(async () => {
      await this.scan();
      await this.tailAll();
    });
  }

  /** Coalesces bursts of file events into one refresh. */
  schedule(): void {
    if (this.disposed) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.refresh();
    }, this.opts.debounceMs ?? 150);
  }

  dispose(): void {
    this.disposed = true;
    if (this.debounce) clearTimeout(this.debounce);
    if (this.livePoll) clearInterval(this.livePoll);
    this.changeRuns.dispose();
    this.append.dispose();
    this.statusChange.dispose();
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const next = this.queue.then(job, job).catch((e) => log.error('the run store failed to refresh', e));
    this.queue = next;
    return next;
  }

  private async findRunDirs(): Promise<string[]> {
    const depth = this.opts.scanDepth ?? 3;
    const found: string[] = [];
    const walk = async (dir: string, level: number): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (e) {
        log.trace(`runs: ${dir} cannot be listed: ${why(e)}`);
        return;
      }
      if (entries.some((e) => e.isFile() && e.name === 'run.json')) {
        found.push(dir);
        return;
      }
      if (level >= depth) return;
      for (const e of entries) {
        if (
          e.isDirectory() &&
          !e.name.startsWith('.') &&
          e.name !== 'checkpoints' &&
          e.name !== 'node_modules'
        ) {
          await walk(path.join(dir, e.name), level + 1);
        }
      }
    };
    for (const root of new Set(this.opts.roots().map((r) => path.resolve(r)))) await walk(root, 0);
    return found;
  }

  private async scan(): Promise<void> {
    const dirs = await this.findRunDirs();
    let changed = false;
    const seen = new Set<string>();
    const byDir = new Map([...this.runs.values()].map((e) => [e.info.dir, e]));
    const changes: StatusChange[] = [];

    for (const dir of dirs) {
      const file = path.join(dir, 'run.json');
      let mtime: number;
      try {
        const st = await fsp.stat(file);
        // run.json is small; anything else (a FIFO, a huge file) is not a run.
        if (!st.isFile() || st.size > 16 * 1024 * 1024) continue;
        mtime = st.mtimeMs;
      } catch (e) {
        log.trace(`runs: ${file} is gone: ${why(e)}`);
        continue;
      }
      let entry = byDir.get(dir);
      if (entry && entry.runJsonMtime === mtime) {
        seen.add(entry.info.id);
        changed = this.updateStale(entry, changes) || changed;
        continue;
      }
      let text: string;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch (e) {
        log.debug(`runs: ${file} cannot be read: ${why(e)}`);
        continue;
      }
      const info = parseRunJson(text, dir, path.basename(dir));
      // A half-written run.json (the engine rewrites it) is retried at the next event.
      if (!info) {
        if (entry) seen.add(entry.info.id);
        continue;
      }
      // The engine writes "experiment": null for standalone runs.
      info.group =
        typeof info.experiment === 'string' && info.experiment !== ''
          ? info.experiment
          : path.basename(path.dirname(dir));
      if (entry) {
        info.id = entry.info.id;
        entry.info = info;
        entry.runJsonMtime = mtime;
      } else {
        const id = this.runs.has(info.id) ? `${path.basename(path.dirname(dir))}/${info.id}` : info.id;
        info.id = id;
        entry = {
          info,
          runJsonMtime: mtime,
          metricsTailer: new JsonlTailer(path.join(dir, 'metrics.jsonl'), { accept: isMetricRecord }),
          routingTailer: new JsonlTailer(path.join(dir, 'routing.jsonl'), { accept: isRoutingRecord }),
          metrics: [],
          routing: [],
          shownStatus: info.status,
        };
        this.runs.set(id, entry);
      }
      seen.add(info.id);
      this.updateStale(entry, changes);
      changed = true;
    }
    for (const id of [...this.runs.keys()]) {
      if (!seen.has(id)) {
        this.runs.delete(id);
        changed = true;
      }
    }
    const live = this.scannedOnce;
    this.scannedOnce = true;
    this.updateLivePoll();
    if (changed) this.changeRuns.fire();
    if (live) for (const c of changes) this.statusChange.fire(c);
  }

  /** Recomputes the shown status; records a transition; true if it changed. */
  private updateStale(entry: RunEntry, changes: StatusChange[]): boolean {
    const stale = isStale(entry.info, this.host, this.alive);
    if (stale) entry.info.stale = true;
    else delete entry.info.stale;
    const now = shownStatus(entry.info);
    if (now === entry.shownStatus) return false;
    const previous = entry.shownStatus;
    entry.shownStatus = now;
    // Only report runs that were seen live, i.e. that were not already finished.
    if (!TERMINAL_STATUSES.has(previous)) changes.push({ run: entry.info, previous, current: now });
    return true;
  }

  private async tailAll(): Promise<void> {
    for (const [id, entry] of this.runs) {
      await this.tail(id, entry);
    }
  }

  private async tail(runId: string, entry: RunEntry): Promise<void> {
    let metrics: MetricRecord[] = [];
    let routing: RoutingRecord[] = [];
    let reset = false;
    const flush = () => {
      if (metrics.length || routing.length || reset) {
        this.append.fire(reset ? { runId, metrics, routing, reset: true } : { runId, metrics, routing });
      }
      metrics = [];
      routing = [];
      reset = false;
    };
    await entry.metricsTailer.poll(
      (batch) => {
        for (const x of batch) entry.metrics.push(x);
        entry.metrics = decimate(entry.metrics, this.maxMetrics);
        for (const x of batch) metrics.push(x);
        if (metrics.length >= APPEND_FLUSH) flush();
      },
      () => {
        entry.metrics = [];
        reset = true;
      },
    );
    await entry.routingTailer.poll(
      (batch) => {
        for (const x of batch) entry.routing.push(x);
        entry.routing = decimate(entry.routing, this.maxRouting);
        for (const x of batch) routing.push(x);
        if (routing.length >= APPEND_FLUSH) flush();
      },
      () => {
        entry.routing = [];
        reset = true;
      },
    );
    flush();
  }

  private updateLivePoll(): void {
    const anyLive = [...this.runs.values()].some(
      (e) => e.shownStatus === 'running' || e.shownStatus === 'queued',
    );
    const ms = this.opts.livePollMs ?? 2000;
    if (anyLive && !this.livePoll && ms > 0 && !this.disposed) {
      this.livePoll = setInterval(() => void this.refresh(), ms);
    } else if (!anyLive && this.livePoll) {
      clearInterval(this.livePoll);
      this.livePoll = undefined;
    }
  }
}
