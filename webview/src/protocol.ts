// The one message protocol between the extension host and the webview panels
// (ARCHITECTURE §7). Types only: the runtime checks live in protocolGuards.ts so that
// both sides validate every message they receive against these shapes; a unit test reads
// this file with the TypeScript compiler and holds the guards to it (test/unit/protocolGuards.test.ts).

export type PanelKind = 'dashboard' | 'router';

/** A run as the panels show it (a projection of run.json). */
export interface RunSummary {
  id: string;
  /** Display name; defaults to the id. */
  name: string;
  /** Runs with the same experiment are grouped (mean and min–max band across seeds). */
  experiment?: string;
  method?: string;
  status: string;
  stage?: string;
  /** The run's colour in every panel (extension/src/runs/runColors.ts), a CSS colour. */
  color?: string;
  /** Where the run starts on the "since the seed" x axes (absent from older senders: 0). */
  sinceSeed?: SeedOffset;
}

/**
 * The tokens and training FLOPs spent on the way from the seed to the checkpoint a run started
 * from (extension/src/runs/sinceSeed.ts). Tokens: the timeline, the max over parallel parents
 * (branches); FLOPs: the compute, the sum over every ancestor run (the seed counted once).
 */
export interface SeedOffset {
  tokens: number;
  flops: number;
  /** Parent references of the run or an ancestor that name no known run (counted as 0). */
  missing: string[];
}

/** A missing value in a column (JSON has no NaN). */
export type Cell = number | null;

/**
 * A column: a Float64Array (NaN = missing), as the host sends it — every column of a block a view
 * of one ArrayBuffer, which VS Code transfers into the webview instead of cloning it; or a JSON
 * array (null = missing). Float64, not Float32: token and FLOP counts pass 2^24 and the CSV export
 * writes the values as logged.
 */
export type Column = Cell[] | Float64Array;

/**
 * A columnar slice of one run's metrics.jsonl for one split. Columnar rather
 * than one object per line: a million points clone, validate and index far
 * faster as a handful of flat arrays than as a million small objects.
 * Every array has the length of `step`.
 */
export interface MetricBlock {
  runId: string;
  split: 'train' | 'eval';
  step: number[] | Float64Array;
  tokens: Column;
  /** Seconds, as the engine writes them (wall clock or since start). */
  time: Column;
  /**
   * Cumulative training FLOPs executed (forward + backward), the engine's "flops" field;
   * absent from blocks of senders that predate it, null cells for runs that predate it.
   */
  flops?: Column;
  /**
   * One column per numeric field: "loss", "lr", "lb_loss", "z_loss", "grad_norm",
   * "tokens_per_s", any extra numeric field, and "domain/<name>" per eval domain.
   */
  values: Record<string, Column>;
}

/** One line of routing.jsonl (ARCHITECTURE §4) with load and prob, plus what the engine merges in. */
export interface RoutingRow {
  step: number;
  layer: number;
  router: 'ffn' | 'attn';
  /** Fraction of tokens per expert (sums to 1, or to k with top-k). */
  load: number[];
  /** Mean router probability per expert. For BAM's soft attention router this is the mixture weight. */
  prob: number[];
  by_domain?: Record<string, number[]>;
  /**
   * Router saturation (OLMoE, §5.3): the share of a token's top-k experts at this
   * step that are also among its top-k at the final step, averaged over a fixed
   * probe batch, in [0, 1]. Written in separate records when training finishes
   * (SaturationPoint); the webview copies it onto the row of the same step.
   */
  saturation?: number;
  /**
   * Expert co-activation (OLMoE): E×E, entry [a][b] = P(b | a), the fraction of tokens
   * routed to expert b among those routed to expert a (diagonal 1, or 0 when a is
   * never picked). Only for top-k routers with at most 64 experts.
   */
  coact?: number[][];
}

/** A routing.jsonl record without load: saturation for an earlier (step, layer, router). */
export interface SaturationPoint {
  step: number;
  layer: number;
  router: 'ffn' | 'attn';
  saturation: number;
}

export interface RoutingBlock {
  runId: string;
  rows: RoutingRow[];
  /** Applied after `rows`, onto rows of the same step, layer and router already received. */
  saturation?: SaturationPoint[];
}

// ---- host -> webview -------------------------------------------------------

export interface InitDashboardMessage {
  type: 'init';
  panel: 'dashboard';
  /** The selection the panel was opened for (kept in the webview state for restore); empty = every run. */
  runIds: string[];
  runs: RunSummary[];
  blocks: MetricBlock[];
}

export interface InitRouterMessage {
  type: 'init';
  panel: 'router';
  runIds: string[];
  runs: RunSummary[];
  routing: RoutingBlock[];
  /** What the Weights tab analyzes; `show` opens the panel on that tab (opened on a checkpoint or a compare). */
  weights?: { target: WeightsTarget | null; show: boolean };
}

/** New lines of metrics.jsonl / routing.jsonl (the store's onDidAppend), to append, never to redraw from scratch. */
export interface AppendMetricsMessage {
  type: 'appendMetrics';
  blocks: MetricBlock[];
}

export interface AppendRoutingMessage {
  type: 'appendRouting';
  routing: RoutingBlock[];
}

/** The run list changed (status, a new run). */
export interface RunsMessage {
  type: 'runs';
  runs: RunSummary[];
}

// ---- weight analysis (the router panel's Weights tab; JSON of `moelab analyze`) ----
// Field names follow engine/moelab/analysis/report.py (schema version 1) so the
// host can forward the file as it is, after validation. Floats may be null there
// (undefined cosine of a zero vector, a distance from a zero reference).

export interface WeightDrift {
  /** Per checkpoint (null: the folder name has no step). */
  steps: (number | null)[];
  /** Per expert, per checkpoint: ||W_t - W_0|| / ||W_0|| over all its matrices. */
  experts: Cell[][];
  /** Per checkpoint: the whole router's relative change. */
  router: Cell[];
  /** Per checkpoint, per expert. */
  router_norms: Cell[][];
}

export interface WeightLayer {
  layer: number;
  router: 'ffn' | 'attn';
  num_experts: number;
  router_norms: Cell[];
  /** E × E. */
  router_cosine: Cell[][];
  /** Per matrix ("w1", "q_proj", …): one norm per expert. */
  expert_norms: Record<string, Cell[]>;
  /** Per matrix: E × E cosine of the flattened weights. */
  expert_cosine: Record<string, Cell[][]>;
  drift: WeightDrift;
  parent_distance: Cell[];
  parent_distance_by_matrix: Record<string, Cell[]>;
}

export interface WeightWarning {
  layer: number | null;
  router: 'ffn' | 'attn' | null;
  /** "collapsed_experts", "router_near_zero", "router_identical", "parent_unavailable" (others may come). */
  kind: string;
  experts: number[];
  message: string;
}

export interface WeightReport {
  version: 1;
  mode: 'analyze';
  method: string;
  threshold: number;
  router_eps: number;
  /** [0] is the drift reference, the last one is what similarity and norms describe. */
  checkpoints: { path: string; step: number | null }[];
  parents: { expert: number; path: string | null; source: 'against' | 'config' | null; used: boolean }[];
  layers: WeightLayer[];
  warnings: WeightWarning[];
  genealogy: unknown[];
}

export interface TensorChange {
  name: string;
  shape: number[];
  dtype_a: string;
  dtype_b: string;
  norm_a: Cell;
  abs_change: Cell;
  /** null: A is all zero (an infinite relative change) or not finite. */
  rel_change: Cell;
}

/** `moelab analyze --compare A B`: only the tensors that differ, largest relative change first. */
export interface CompareReport {
  version: 1;
  mode: 'compare';
  a: string;
  b: string;
  num_tensors: number;
  num_changed: number;
  tensors: TensorChange[];
}

/** What the Weights tab describes: a run's checkpoints, one checkpoint, or a pair (A → B). */
export interface WeightsTarget {
  kind: 'run' | 'checkpoint' | 'pair';
  label: string;
}

/** none: nothing analyzed yet; unavailable: cannot run here (no target, Restricted Mode, no checkpoint). */
export type AnalysisState = 'none' | 'running' | 'failed' | 'unavailable';

export interface AnalysisStatusMessage {
  type: 'analysisStatus';
  target: WeightsTarget | null;
  state: AnalysisState;
  detail: string;
  /** Which engine job of how many is running (a compare runs two). */
  job?: { index: number; count: number };
}

export interface AnalysisResultMessage {
  type: 'analysisResult';
  target: WeightsTarget;
  /** Read from the cache next to the checkpoint rather than computed now. */
  cached: boolean;
  /** When the JSON was written (ms since the epoch). */
  writtenAt: number;
  report: WeightReport;
  compare?: CompareReport;
}

// ---- results (the Results panel: a study.json or an eval.json, ARCHITECTURE §7) ----
// The host reads the file and normalizes both shapes (engine/moelab/train/study.py, schema 1;
// the pipeline's eval.json as one seed without claims) into ResultsDoc.

/** The verdict rule of engine/moelab/train/verdicts.py. */
export type Verdict = 'holds in every seed' | 'holds on the mean only' | 'does not hold' | 'not measured';

/** Perplexity over seeds: std null with one seed; mean null when every seed failed; a value null where that seed failed. */
export interface Spread {
  mean: number | null;
  std: number | null;
  values: (number | null)[];
}

export type ResultsRole = 'seed' | 'branch' | 'tune' | 'baseline' | 'method' | 'variant';

/** What a model's training cost (study.json's "budget"); absent fields were not recorded. */
export interface ResultsBudget {
  steps?: number;
  tokens?: number;
  tokensAfterSeed?: number;
  trainFlops?: number;
  matchedTo?: string;
}

export interface ResultsModel {
  label: string;
  role: ResultsRole;
  budget: ResultsBudget;
  /** Per domain and "average". */
  ppl: Record<string, Spread>;
  /** Per lm-eval task of ResultsDoc.tasks: its score (the task's metric), mean over seeds. */
  scores: Record<string, Spread>;
  /** The model's colour, from the one colour assignment (extension/src/runs/runColors.ts). */
  color: string;
}

export interface ResultsComparison {
  lower: string;
  higher: string;
  /** (higher - lower) / higher in percent, on the mean over seeds: positive when the claim holds. */
  marginPct: number;
  marginPctPerSeed: number[];
  /** The same margin from the paper's perplexities; null when the paper has no such number. */
  paperMarginPct: number | null;
}

export interface ResultsClaim {
  claim: string;
  source: string;
  verdict: Verdict;
  /** Models a "not measured" claim lacks. */
  missing: string[];
  comparisons: ResultsComparison[];
}

export interface ResultsSetting {
  name: string;
  block: string;
  seeds: number[];
  models: ResultsModel[];
  claims: ResultsClaim[];
}

export interface ResultsDoc {
  /** study: study.json; eval: a pipeline's eval.json (one seed, no claims) or a run's eval.json (one model). */
  kind: 'study' | 'eval';
  domains: string[];
  /** The lm-eval tasks scored (eval.json's "lm_eval"), one table column each; empty without them. */
  tasks: ResultsTask[];
  settings: ResultsSetting[];
}

/** An lm-eval task column: the metric shown (lm-eval's key, "acc,none") and which way is better. */
export interface ResultsTask {
  name: string;
  metric: string;
  /** Accuracy-like metrics: true; perplexity-like (word_perplexity, bits_per_byte): false. */
  higherIsBetter: boolean;
}

/** The results to show (init and every refresh); doc null with an error when the file cannot be read. */
export interface ResultsMessage {
  type: 'results';
  /** Absolute path of the file shown (kept in the webview state, so a reload reopens it). */
  file: string;
  /** The same, as the user reads it (workspace-relative where possible). */
  label: string;
  doc: ResultsDoc | null;
  error: string | null;
}

export type HostToResultsMessage = ResultsMessage;

export type HostToDashboardMessage = InitDashboardMessage | AppendMetricsMessage | RunsMessage;
export type HostToRouterMessage =
  InitRouterMessage | AppendRoutingMessage | RunsMessage | AnalysisStatusMessage | AnalysisResultMessage;

// ---- webview -> host -------------------------------------------------------

/** The webview's script has loaded and listens: the host answers with `init`. */
export interface ReadyMessage {
  type: 'ready';
}

/** Webviews cannot download: the host asks where to save and writes the file. */
export interface SaveFileMessage {
  type: 'saveFile';
  suggestedName: string;
  format: 'png' | 'csv';
  /** png: base64 without the data: prefix; csv: the text. */
  data: string;
}

export type RouterWarningKind = 'dead' | 'collapse';

export interface RouterWarning {
  runId: string;
  kind: RouterWarningKind;
  layer: number;
  router: 'ffn' | 'attn';
  experts: number[];
  message: string;
}

/** The router panel found dead experts or a collapse; the host notifies once per run. */
export interface RouterWarningsMessage {
  type: 'routerWarnings';
  warnings: RouterWarning[];
}

/** The webview dropped messages it could not validate (for the host's log). */
export interface ProtocolErrorMessage {
  type: 'protocolError';
  dropped: number;
  detail: string;
}

/** The Weights tab is shown: use the cached analysis or start one (force: analyze again). */
export interface RequestAnalysisMessage {
  type: 'requestAnalysis';
  force: boolean;
}

export type CopyFormat = 'markdown' | 'latex' | 'csv';

/** The Results panel's copy buttons: the host puts the text on the clipboard (vscode.env.clipboard). */
export interface CopyTextMessage {
  type: 'copyText';
  format: CopyFormat;
  text: string;
}

export type WebviewToHostMessage =
  | ReadyMessage
  | SaveFileMessage
  | RouterWarningsMessage
  | ProtocolErrorMessage
  | RequestAnalysisMessage
  | CopyTextMessage;

// ---- persisted webview state (setState/getState, and the serializer's restore) ----

/** tokensSinceSeed / flopsSinceSeed: each run shifted by its RunSummary.sinceSeed. */
export type XAxisMode = 'step' | 'tokens' | 'flops' | 'time' | 'tokensSinceSeed' | 'flopsSinceSeed';

export interface DashboardState {
  panel: 'dashboard';
  /** Runs the panel was opened for; empty = every run. */
  runIds: string[];
  smoothing: number;
  logScale: boolean;
  ignoreOutliers: boolean;
  groupByExperiment: boolean;
  xAxis: XAxisMode;
  filter: string;
  hidden: string[];
  pinned: string[];
}

export interface RouterState {
  panel: 'router';
  runIds: string[];
  runA: string;
  /** Second run shown side by side; '' = none. */
  runB: string;
  router: 'all' | 'ffn' | 'attn';
  layerFilter: string;
  /** Logged step for the domain × expert matrices; -1 = latest. */
  step: number;
  /** Optional: states saved before the Weights tab existed lack these. */
  tab?: 'routing' | 'weights';
  /** Weights tab: the layer shown, its router, and the expert matrix of the similarity heatmap. */
  weightsLayer?: number;
  weightsRouter?: 'ffn' | 'attn';
  weightsMatrix?: string;
}

export interface ResultsState {
  panel: 'results';
  /** Absolute path of the study.json / eval.json shown (the serializer reopens it). */
  file: string;
  /** Index of the setting shown (study.json may hold several). */
  setting: number;
}

export type PanelState = DashboardState | RouterState | ResultsState;
