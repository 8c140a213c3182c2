// Validation of run-directory files (ARCHITECTURE §4). Lenient on extra fields, strict on the ones
// the views index by, so one odd line cannot break a chart. No vscode import.
import {
  type MetricRecord,
  type RoutingRecord,
  RUN_STAGES,
  RUN_STATUSES,
  type RunInfo,
  type RunStage,
  type RunStatus,
  type ShownStatus,
} from './model';
import { log, why } from '../util/log';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isNumberArray = (v: unknown): v is number[] =>
  Array.isArray(v) && v.every((x) => typeof x === 'number');

export function isMetricRecord(v: unknown): v is MetricRecord {
  return (
    isObject(v) &&
    typeof v.step === 'number' &&
    Number.isFinite(v.step) &&
    (v.split === undefined || v.split === 'train' || v.split === 'eval')
  );
}

/** A per-step record (load and prob), or a saturation record the engine appends when a run is done. */
export function isRoutingRecord(v: unknown): v is RoutingRecord {
  if (
    !isObject(v) ||
    typeof v.step !== 'number' ||
    typeof v.layer !== 'number' ||
    (v.router !== 'ffn' && v.router !== 'attn')
  )
    return false;
  return v.load === undefined
    ? typeof v.saturation === 'number'
    : isNumberArray(v.load) && isNumberArray(v.prob);
}

const isRunStatus = (v: unknown): v is RunStatus => (RUN_STATUSES as readonly unknown[]).includes(v);
const isRunStage = (v: unknown): v is RunStage => (RUN_STAGES as readonly unknown[]).includes(v);

/**
 * Parses run.json; `dir` is where it was found. The id falls back to the folder name; a missing or
 * unknown status reads as "queued" (what the engine writes before a run starts), an unknown stage as none.
 */
export function parseRunJson(text: string, dir: string, folderName: string): RunInfo | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    log.debug(`${dir}/run.json is not JSON, not shown as a run: ${why(e)}`);
    return undefined;
  }
  if (!isObject(v)) return undefined;
  const run: RunInfo = {
    ...v,
    id: typeof v.id === 'string' && v.id ? v.id : folderName,
    dir,
    status: isRunStatus(v.status) ? v.status : 'queued',
  };
  if (!isRunStage(v.stage)) delete run.stage;
  if (typeof v.pid !== 'number') delete run.pid;
  if (v.parents !== undefined && !(Array.isArray(v.parents) && v.parents.every((p) => typeof p === 'string')))
    delete run.parents;
  if (v.config !== undefined && !isObject(v.config)) delete run.config;
  return run;
}

export const TERMINAL_STATUSES: ReadonlySet<ShownStatus> = new Set<ShownStatus>([
  'done',
  'failed',
  'stopped',
  'diverged',
]);

/** Whether a process exists on this host; EPERM means it exists but belongs to someone else. */
export function isPidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * "running" is only believable if the process is alive. We can check only on the host that
 * started it; runs on other hosts (Slurm nodes) keep their word.
 */
export function isStale(
  run: RunInfo,
  thisHost: string,
  alive: (pid: number) => boolean = isPidAlive,
): boolean {
  if (run.status !== 'running' || typeof run.pid !== 'number') return false;
  if (typeof run.host === 'string' && run.host !== '' && run.host !== thisHost) return false;
  return !alive(run.pid);
}

/** The step count a run aims for, wherever the engine put it. */
export function totalSteps(run: RunInfo): number | undefined {
  const cfg = run.config ?? {};
  const train = isObject(cfg.train) ? cfg.train : {};
  for (const v of [
    run.total_steps,
    run.max_steps,
    cfg.total_steps,
    cfg.max_steps,
    cfg.steps,
    train.steps,
    train.max_steps,
  ]) {
    if (typeof v === 'number' && v > 0) return v;
  }
  return undefined;
}
