// The run-directory contract of ARCHITECTURE.md §4, as the extension sees it.
// Shared by the Runs view, the status bar and the webview panel hosts.
import type * as vscode from 'vscode';

export const RUN_STATUSES = ['queued', 'running', 'done', 'failed', 'stopped', 'diverged'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export const RUN_STAGES = ['dense', 'branch', 'upcycle', 'moe', 'eval'] as const;
export type RunStage = (typeof RUN_STAGES)[number];
/** Statuses a user sees: ARCHITECTURE §4's plus "stale" (running on this host, process gone). */
export type ShownStatus = RunStatus | 'stale';
/** What the Slurm view calls a submitted job that has no run.json yet: a run's, or an experiment's. */
export type PendingStage = 'slurm' | 'experiment';
/** An FFN router (block_sparse_moe.gate) or a BAM attention router (self_attn.router). */
export type RouterKind = 'ffn' | 'attn';

/** run.json, plus where it was found. Fields the engine may omit are optional. */
export interface RunInfo {
  id: string;
  /** Absolute path of runs/<run-id>/ */
  dir: string;
  stage?: RunStage | PendingStage;
  method?: string;
  parents?: string[];
  /** Experiment name (the folder or experiment the run belongs to), for grouping. */
  experiment?: string;
  status: RunStatus;
  started?: string;
  ended?: string;
  host?: string;
  pid?: number;
  config?: Record<string, unknown>;
  /** Training runs: training FLOPs executed (forward + backward) as of the newest checkpoint; the total when done. */
  flops?: number;
  /** Training runs: FLOPs per training token (forward + backward, engine models/flops.py). */
  flops_per_token?: number;
  /** Set by the run store: `experiment` when present, else the parent folder's name. */
  group?: string;
  /** Set by the run store: status says running but the pid is dead on this host. */
  stale?: boolean;
  /** Set by the Slurm view: a submitted job whose run.json does not exist yet. */
  slurmOnly?: boolean;
  /** Free-form extra fields the engine writes (e.g. total_steps, error). */
  [extra: string]: unknown;
}

/** One line of metrics.jsonl. */
export interface MetricRecord {
  step: number;
  tokens?: number;
  /** Cumulative training FLOPs executed, forward + backward (engine: models/flops.py). */
  flops?: number;
  time?: number;
  split?: 'train' | 'eval';
  loss?: number;
  lr?: number;
  lb_loss?: number;
  z_loss?: number;
  grad_norm?: number;
  tokens_per_s?: number;
  domain?: Record<string, number>;
  [extra: string]: unknown;
}

/**
 * One line of routing.jsonl: per logged step, load and prob (and coact); when the run is done,
 * one more record per logged step with saturation and no load (merged by the panels).
 */
export interface RoutingRecord {
  step: number;
  layer: number;
  router: RouterKind;
  load?: number[];
  prob?: number[];
  by_domain?: Record<string, number[]>;
  coact?: number[][];
  saturation?: number;
  [extra: string]: unknown;
}

export interface RunAppend {
  runId: string;
  metrics: MetricRecord[];
  routing: RoutingRecord[];
  /**
   * The store dropped what it held for this run (a file was truncated or recreated): discard
   * earlier records and re-read metrics()/routing(); `metrics`/`routing` then start afresh.
   */
  reset?: boolean;
}

/** What the panels need from the run store (implemented in runs/runStore.ts). */
export interface RunStoreApi {
  list(): RunInfo[];
  get(runId: string): RunInfo | undefined;
  /** Everything parsed so far (the store tails the files incrementally). */
  metrics(runId: string): readonly MetricRecord[];
  routing(runId: string): readonly RoutingRecord[];
  /** Lines skipped because they could not be parsed, per file. */
  badLines(runId: string): { metrics: number; routing: number };
  readonly onDidChangeRuns: vscode.Event<void>;
  /** New records appended to a run's files since the last event. */
  readonly onDidAppend: vscode.Event<RunAppend>;
}
