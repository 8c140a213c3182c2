// Argument arrays for `moelab slurm script|submit|status|cancel|log`, and the reading of what
// `moelab slurm status --json` prints. The engine renders and submits the sbatch script (one
// source of truth); the extension only chooses arguments. Every value is one argv element and
// options use the `--flag=value` form, so a value starting with "-" cannot become an option.
// Values are not validated here: the engine refuses what Slurm could misread, with its message.
// No vscode import.
import * as path from 'node:path';
import { pathArg, TaskArgError } from './taskArgs';
import { log, why } from '../util/log';

/** The moelab.slurm.* settings; undefined = take it from the config's "slurm" object (or the engine's default). */
export interface SlurmSettings {
  partition?: string;
  account?: string;
  nodes?: number;
  gpusPerNode?: number;
  /** torchrun workers per node (engine default: one per GPU, or 1 on CPU). */
  procsPerNode?: number;
  time?: string;
  cpusPerTask?: number;
}

function checkValue(name: string, v: string): string {
  if (v.includes('\0')) throw new TaskArgError(`${name} contains a NUL character`);
  return v;
}

function intOption(flag: string, v: number | undefined, min: number): string[] {
  if (v === undefined) return [];
  if (!Number.isSafeInteger(v) || v < min)
    throw new TaskArgError(`${flag} must be an integer >= ${min}, got ${v}`);
  return [`${flag}=${v}`];
}

function strOption(flag: string, v: string | undefined): string[] {
  return v === undefined || v === '' ? [] : [`${flag}=${checkValue(flag, v)}`];
}

/** Resource flags shared by `script` and `submit`; only the settings that are set. */
export function slurmResourceArgs(s: SlurmSettings = {}): string[] {
  return [
    ...intOption('--nodes', s.nodes, 1),
    ...intOption('--gpus-per-node', s.gpusPerNode, 0),
    ...intOption('--procs-per-node', s.procsPerNode, 1),
    ...strOption('--time', s.time),
    ...strOption('--partition', s.partition),
    ...strOption('--account', s.account),
    ...intOption('--cpus-per-task', s.cpusPerTask, 1),
  ];
}

/** `moelab slurm script CONFIG [resources] --out SCRIPT`: writes the script for the user to read and edit. */
export function slurmScriptArgs(config: string, out: string, s: SlurmSettings, base: string): string[] {
  return ['slurm', 'script', pathArg(config, base), ...slurmResourceArgs(s), `--out=${pathArg(out, base)}`];
}

/**
 * `moelab slurm submit --script SCRIPT`. No resource flags: they would override the #SBATCH lines
 * the user may just have edited.
 */
export function slurmSubmitScriptArgs(script: string, base: string): string[] {
  return ['slurm', 'submit', `--script=${pathArg(script, base)}`];
}

/** `moelab slurm submit CONFIG [resources]`: tasks.json jobs with the slurm launcher (no editing step). */
export function slurmSubmitConfigArgs(config: string, s: SlurmSettings, base: string): string[] {
  return ['slurm', 'submit', pathArg(config, base), ...slurmResourceArgs(s)];
}

/**
 * A training job (`train CONFIG` / `run EXPERIMENT`, e.g. from tasks.json) under the slurm launcher:
 * `slurm submit CONFIG [resources]`. The engine takes a config file only, so other arguments are refused.
 */
export function slurmTaskArgs(engineArgs: readonly string[], s: SlurmSettings, base: string): string[] {
  const [command, config, ...rest] = engineArgs;
  if ((command !== 'train' && command !== 'run') || config === undefined || rest.length > 0) {
    throw new TaskArgError(
      `the slurm launcher submits "train CONFIG" or "run EXPERIMENT" only, got: ${JSON.stringify(engineArgs)}`,
    );
  }
  return slurmSubmitConfigArgs(config, s, base);
}

/** `moelab slurm status --runs RUNS --json`: every job submitted under a runs directory. */
export function slurmStatusArgs(runsRoot: string, base: string): string[] {
  return ['slurm', 'status', `--runs=${pathArg(runsRoot, base)}`, '--json'];
}

/** `moelab slurm cancel RUN_DIR`: the run directory's slurm.json names the job. */
export function slurmCancelArgs(runDir: string, base: string): string[] {
  return ['slurm', 'cancel', pathArg(runDir, base)];
}

/** `moelab slurm log RUN_DIR --follow`: prints the log until the job ends. */
export function slurmLogArgs(runDir: string, base: string, follow = true): string[] {
  return ['slurm', 'log', pathArg(runDir, base), ...(follow ? ['--follow'] : [])];
}

/** Where "Submit to Slurm…" writes the editable script: beside the config, named after it. */
export function scriptPathFor(config: string): string {
  const base = path.basename(config).replace(/(\.moelab)?\.json$/i, '');
  return path.join(path.dirname(config), `${base || 'job'}.sbatch`);
}

/** The runs directory `moelab slurm status --runs` must be given to find a job recorded in `runDir`. */
export function runsRootOf(runDir: string): string {
  const parent = path.dirname(path.resolve(runDir));
  // Experiments record their job under <runs>/.slurm/<name>/ (engine: EXPERIMENT_RECORDS).
  return path.basename(parent) === '.slurm' ? path.dirname(parent) : parent;
}

/** The run directory a generated script names (`# moelab-run-dir: ...`, written by the engine). */
export function runDirOfScript(text: string): string | undefined {
  const mark = '# moelab-run-dir: ';
  const line = text.split(/\r?\n/).find((l) => l.startsWith(mark));
  return line ? line.slice(mark.length).trim() || undefined : undefined;
}

/** One row of `moelab slurm status --json`. */
export interface SlurmJobState {
  jobId: string;
  /** Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... or UNKNOWN. */
  state: string;
  /** Whether Slurm still has the job queued or running (the engine decides). */
  active: boolean;
  runDir?: string;
  log?: string;
  reason?: string;
  exitCode?: string;
  elapsed?: string;
  nodes?: string;
  /** squeue | sacct | scontrol | none */
  source?: string;
}

function optString(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Parses `moelab slurm status --json` (a list without a target, one object with one). Rows that
 * are not objects with a job id are skipped; anything unparsable gives an empty list, since a
 * half-broken status must not break the Runs view.
 */
export function parseSlurmStatus(stdout: string): SlurmJobState[] {
  let data: unknown;
  try {
    data = JSON.parse(stdout);
  } catch (e) {
    log.warn(`moelab slurm status: not JSON (${why(e)}): ${stdout.slice(0, 200)}`);
    return [];
  }
  const rows = Array.isArray(data) ? data : [data];
  const out: SlurmJobState[] = [];
  for (const r of rows) {
    if (typeof r !== 'object' || r === null) continue;
    const o = r as Record<string, unknown>;
    const jobId = typeof o.job_id === 'number' ? String(o.job_id) : optString(o.job_id);
    if (!jobId) continue;
    const state = optString(o.state) ?? 'UNKNOWN';
    const runDir = optString(o.run_dir);
    out.push({
      jobId,
      state,
      active:
        typeof o.active === 'boolean' ? o.active : ACTIVE_QUEUED.has(state) || ACTIVE_RUNNING.has(state),
      runDir: runDir === undefined ? undefined : path.resolve(runDir),
      log: optString(o.log),
      reason: optString(o.reason),
      exitCode: optString(o.exit_code),
      elapsed: optString(o.elapsed),
      nodes: optString(o.nodes),
      source: optString(o.source),
    });
  }
  return out;
}

const ACTIVE_QUEUED = new Set([
  'PENDING',
  'CONFIGURING',
  'REQUEUED',
  'REQUEUE_HOLD',
  'REQUEUE_FED',
  'RESV_DEL_HOLD',
]);
const ACTIVE_RUNNING = new Set(['RUNNING', 'COMPLETING', 'STAGE_OUT', 'SIGNALING', 'RESIZING']);

/** What the Runs view says about a job: "queued (slurm 1234)", "running (slurm 1234)", ... */
export function slurmLabel(s: SlurmJobState): string {
  const word = ACTIVE_QUEUED.has(s.state)
    ? 'queued'
    : ACTIVE_RUNNING.has(s.state)
      ? 'running'
      : s.state.toLowerCase().replace(/_/g, ' ');
  return `${word} (slurm ${s.jobId})`;
}

/** The run status a job without a run.json yet is shown with. */
export function slurmRunStatus(s: SlurmJobState): 'queued' | 'running' {
  return ACTIVE_RUNNING.has(s.state) ? 'running' : 'queued';
}
