// Runtime validation of protocol.ts messages, used on receipt by both sides
// (webview bundles and the extension host). No DOM, no vscode: plain checks.
// Each parser returns undefined for anything malformed, never throws. test/unit/protocolGuards.test.ts
// checks every message and state of protocol.ts against them: a new field needs its check here.
import type {
  AnalysisResultMessage,
  AnalysisStatusMessage,
  Cell,
  CopyFormat,
  Column,
  CompareReport,
  DashboardState,
  HostToDashboardMessage,
  HostToResultsMessage,
  HostToRouterMessage,
  MetricBlock,
  ResultsClaim,
  ResultsComparison,
  ResultsDoc,
  ResultsModel,
  ResultsSetting,
  ResultsState,
  ResultsTask,
  Verdict,
  RouterState,
  RouterWarning,
  RoutingBlock,
  RoutingRow,
  SaturationPoint,
  RunSummary,
  SeedOffset,
  TensorChange,
  WebviewToHostMessage,
  WeightLayer,
  WeightReport,
  WeightsTarget,
  WeightWarning,
  XAxisMode,
} from './protocol';

type Obj = Record<string, unknown>;

const MAX_STRING = 10_000;
/** A PNG of a chart is well under this; anything bigger is not ours. */
const MAX_FILE_DATA = 64 * 1024 * 1024;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function isStr(v: unknown, max = MAX_STRING): v is string {
  return typeof v === 'string' && v.length <= max;
}
function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}
function isOptStr(v: unknown): boolean {
  return v === undefined || isStr(v);
}

function isNumArray(v: unknown): v is number[] {
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) if (!isNum(v[i])) return false;
  return true;
}

/** The loop alone in its function: V8 optimizes a long loop on its first call (OSR), and code after
 *  it that has never run (no type feedback) would throw that code away again on every call. */
function allFinite(a: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

function isCellArray(v: unknown, length: number): v is Column {
  if (v instanceof Float64Array) return v.length === length;
  if (!Array.isArray(v) || v.length !== length) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c !== null && !isNum(c)) return false;
  }
  return true;
}

export function isRunSummary(v: unknown): v is RunSummary {
  return (
    isObj(v) &&
    isStr(v.id) &&
    v.id.length > 0 &&
    isStr(v.name) &&
    isStr(v.status) &&
    isOptStr(v.experiment) &&
    isOptStr(v.method) &&
    isOptStr(v.stage) &&
    (v.color === undefined || isColor(v.color)) &&
    (v.sinceSeed === undefined || isSeedOffset(v.sinceSeed))
  );
}

export function isSeedOffset(v: unknown): v is SeedOffset {
  return (
    isObj(v) &&
    isNum(v.tokens) &&
    v.tokens >= 0 &&
    isNum(v.flops) &&
    v.flops >= 0 &&
    Array.isArray(v.missing) &&
    v.missing.length <= 1000 &&
    v.missing.every((m) => isStr(m, 4096))
  );
}

/** The colours we send are hsl()/hex strings; nothing else reaches a style. */
export function isColor(v: unknown): v is string {
  return isStr(v, 64) && /^(#[0-9a-fA-F]{3,8}|hsl\(\s*[\d.]+(deg)?[ ,]+[\d.]+%[ ,]+[\d.]+%\s*\))$/.test(v);
}

function isRunList(v: unknown): v is RunSummary[] {
  return Array.isArray(v) && v.every(isRunSummary);
}

export function isMetricBlock(v: unknown): v is MetricBlock {
  if (!isObj(v) || !isStr(v.runId) || (v.split !== 'train' && v.split !== 'eval')) return false;
  const step = v.step;
  if (step instanceof Float64Array) {
    if (!allFinite(step)) return false;
  } else if (!isNumArray(step)) return false;
  const n = (step as ArrayLike<number>).length;
  if (!isCellArray(v.tokens, n) || !isCellArray(v.time, n) || !isObj(v.values)) return false;
  if (v.flops !== undefined && !isCellArray(v.flops, n)) return false;
  for (const key of Object.keys(v.values)) {
    if (key.length > 200 || !isCellArray(v.values[key], n)) return false;
  }
  return true;
}

function isRouterKind(v: unknown): v is 'ffn' | 'attn' {
  return v === 'ffn' || v === 'attn';
}

function hasRoutingKey(v: Record<string, unknown>): boolean {
  return isNum(v.step) && Number.isInteger(v.layer) && isRouterKind(v.router);
}

export function isSaturationPoint(v: unknown): v is SaturationPoint {
  return isObj(v) && hasRoutingKey(v) && isNum(v.saturation) && v.saturation >= 0 && v.saturation <= 1;
}

export function isRoutingRow(v: unknown): v is RoutingRow {
  if (!isObj(v) || !hasRoutingKey(v)) return false;
  if (!isNumArray(v.load) || !isNumArray(v.prob) || v.load.length === 0) return false;
  if (v.prob.length !== 0 && v.prob.length !== v.load.length) return false;
  const e = v.load.length;
  if (v.by_domain !== undefined) {
    if (!isObj(v.by_domain)) return false;
    for (const d of Object.keys(v.by_domain)) {
      const arr = v.by_domain[d];
      if (!isNumArray(arr) || arr.length !== e) return false;
    }
  }
  if (v.saturation !== undefined && !isNum(v.saturation)) return false;
  if (v.coact !== undefined) {
    if (!Array.isArray(v.coact) || v.coact.length !== e) return false;
    for (const row of v.coact) if (!isNumArray(row) || row.length !== e) return false;
  }
  return true;
}

export function isRoutingBlock(v: unknown): v is RoutingBlock {
  if (!isObj(v) || !isStr(v.runId) || !Array.isArray(v.rows) || !v.rows.every(isRoutingRow)) return false;
  return v.saturation === undefined || (Array.isArray(v.saturation) && v.saturation.every(isSaturationPoint));
}

// ---- results ----------------------------------------------------------------

export const VERDICTS: readonly Verdict[] = [
  'holds in every seed',
  'holds on the mean only',
  'does not hold',
  'not measured',
];
const MAX_MODELS = 10_000;
const MAX_SEEDS = 10_000;

function isNumOrNull(v: unknown): v is number | null {
  return v === null || isNum(v);
}

function isSpread(v: unknown): boolean {
  return (
    isObj(v) &&
    isNumOrNull(v.mean) &&
    isNumOrNull(v.std) &&
    Array.isArray(v.values) &&
    v.values.length <= MAX_SEEDS &&
    v.values.every(isNumOrNull)
  );
}

function isOptNum(v: unknown): boolean {
  return v === undefined || isNum(v);
}

function isResultsTask(v: unknown): v is ResultsTask {
  return isObj(v) && isStr(v.name, 500) && isStr(v.metric, 500) && typeof v.higherIsBetter === 'boolean';
}

function isResultsModel(v: unknown, domains: string[], tasks: string[]): v is ResultsModel {
  if (!isObj(v) || !isStr(v.label, 500) || !isColor(v.color)) return false;
  if (!['seed', 'branch', 'tune', 'baseline', 'method', 'variant'].includes(v.role as string)) return false;
  const b = v.budget;
  if (
    !isObj(b) ||
    !isOptNum(b.steps) ||
    !isOptNum(b.tokens) ||
    !isOptNum(b.tokensAfterSeed) ||
    !isOptNum(b.trainFlops) ||
    !isOptStr(b.matchedTo)
  )
    return false;
  return (
    isObj(v.ppl) &&
    [...domains, 'average'].every((d) => isSpread((v.ppl as Obj)[d])) &&
    isObj(v.scores) &&
    tasks.every((t) => isSpread((v.scores as Obj)[t]))
  );
}

function isComparison(v: unknown): v is ResultsComparison {
  return (
    isObj(v) &&
    isStr(v.lower, 500) &&
    isStr(v.higher, 500) &&
    isNum(v.marginPct) &&
    isNumArray(v.marginPctPerSeed) &&
    isNumOrNull(v.paperMarginPct)
  );
}

function isClaim(v: unknown): v is ResultsClaim {
  return (
    isObj(v) &&
    isStr(v.claim, 1000) &&
    isStr(v.source, 200) &&
    VERDICTS.includes(v.verdict as never) &&
    isStrArray(v.missing) &&
    Array.isArray(v.comparisons) &&
    v.comparisons.every(isComparison)
  );
}

function isSetting(v: unknown, domains: string[], tasks: string[]): v is ResultsSetting {
  return (
    isObj(v) &&
    isStr(v.name, 500) &&
    isStr(v.block, 100) &&
    isNumArray(v.seeds) &&
    Array.isArray(v.models) &&
    v.models.length <= MAX_MODELS &&
    v.models.every((m) => isResultsModel(m, domains, tasks)) &&
    Array.isArray(v.claims) &&
    v.claims.every(isClaim)
  );
}

export function isResultsDoc(v: unknown): v is ResultsDoc {
  if (
    !isObj(v) ||
    (v.kind !== 'study' && v.kind !== 'eval') ||
    !isStrArray(v.domains) ||
    v.domains.length > 1000
  )
    return false;
  if (!Array.isArray(v.tasks) || v.tasks.length > 1000 || !v.tasks.every(isResultsTask)) return false;
  const domains = v.domains;
  const tasks = v.tasks.map((t) => t.name);
  return (
    Array.isArray(v.settings) &&
    v.settings.length <= 1000 &&
    v.settings.every((s) => isSetting(s, domains, tasks))
  );
}

export function parseHostToResults(v: unknown): HostToResultsMessage | undefined {
  if (!isObj(v) || v.type !== 'results' || !isStr(v.file, 4096) || !isStr(v.label, 4096)) return undefined;
  const base = { type: 'results' as const, file: v.file, label: v.label };
  if (v.doc === null) return isStr(v.error, 2000) ? { ...base, doc: null, error: v.error } : undefined;
  return isResultsDoc(v.doc) && (v.error === null || isStr(v.error, 2000))
    ? { ...base, doc: v.doc, error: v.error }
    : undefined;
}

export function parseResultsState(v: unknown): ResultsState | undefined {
  if (!isObj(v) || v.panel !== 'results' || !isStr(v.file, 4096) || !isInt(v.setting) || v.setting < 0)
    return undefined;
  return { panel: 'results', file: v.file, setting: v.setting };
}

export function parseHostToDashboard(v: unknown): HostToDashboardMessage | undefined {
  if (!isObj(v)) return undefined;
  switch (v.type) {
    case 'init':
      return v.panel === 'dashboard' &&
        isStrArray(v.runIds) &&
        isRunList(v.runs) &&
        Array.isArray(v.blocks) &&
        v.blocks.every(isMetricBlock)
        ? (v as unknown as HostToDashboardMessage)
        : undefined;
    case 'appendMetrics':
      return Array.isArray(v.blocks) && v.blocks.every(isMetricBlock)
        ? (v as unknown as HostToDashboardMessage)
        : undefined;
    case 'runs':
      return isRunList(v.runs) ? (v as unknown as HostToDashboardMessage) : undefined;
    default:
      return undefined;
  }
}

// ---- weight analysis -------------------------------------------------------

/** Far above any real MoE (DeepSeek-V3 has 256 routed experts); bounds the E × E checks. */
const MAX_EXPERTS = 4096;
const MAX_LAYERS = 10_000;
const MAX_CHECKPOINTS = 100_000;

function isCell(v: unknown): v is Cell {
  return v === null || isNum(v);
}

function isCells(v: unknown, length: number): v is Cell[] {
  if (!Array.isArray(v) || v.length !== length) return false;
  for (let i = 0; i < v.length; i++) if (!isCell(v[i])) return false;
  return true;
}

function isCellMatrix(v: unknown, rows: number, cols: number): v is Cell[][] {
  return Array.isArray(v) && v.length === rows && v.every((r) => isCells(r, cols));
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/** Matrix name → value, for every matrix stored per expert ("w1", "q_proj", UpIT's LoRA factors…). */
function isPerMatrix(v: unknown, check: (x: unknown) => boolean): boolean {
  if (!isObj(v)) return false;
  const keys = Object.keys(v);
  return keys.length <= 64 && keys.every((k) => k.length > 0 && k.length <= 100 && check(v[k]));
}

function isWeightLayer(v: unknown, checkpoints: number): v is WeightLayer {
  if (!isObj(v) || !isInt(v.layer) || v.layer < 0 || !isRouterKind(v.router)) return false;
  const e = v.num_experts;
  if (!isInt(e) || e < 1 || e > MAX_EXPERTS) return false;
  if (!isCells(v.router_norms, e) || !isCellMatrix(v.router_cosine, e, e)) return false;
  if (
    !isPerMatrix(v.expert_norms, (x) => isCells(x, e)) ||
    !isPerMatrix(v.expert_cosine, (x) => isCellMatrix(x, e, e))
  )
    return false;
  const d = v.drift;
  if (
    !isObj(d) ||
    !Array.isArray(d.steps) ||
    d.steps.length !== checkpoints ||
    !d.steps.every((s) => s === null || isInt(s))
  )
    return false;
  if (
    !isCellMatrix(d.experts, e, checkpoints) ||
    !isCells(d.router, checkpoints) ||
    !isCellMatrix(d.router_norms, checkpoints, e)
  )
    return false;
  return isCells(v.parent_distance, e) && isPerMatrix(v.parent_distance_by_matrix, (x) => isCells(x, e));
}

function isWeightWarning(v: unknown): v is WeightWarning {
  return (
    isObj(v) &&
    (v.layer === null || (isInt(v.layer) && v.layer >= 0)) &&
    (v.router === null || isRouterKind(v.router)) &&
    isStr(v.kind, 100) &&
    Array.isArray(v.experts) &&
    v.experts.length <= MAX_EXPERTS &&
    v.experts.every((x) => isInt(x) && x >= 0) &&
    isStr(v.message, 2000)
  );
}

function isParent(v: unknown): boolean {
  return (
    isObj(v) &&
    isInt(v.expert) &&
    (v.path === null || isStr(v.path)) &&
    (v.source === null || v.source === 'against' || v.source === 'config') &&
    typeof v.used === 'boolean'
  );
}

/** The JSON of `moelab analyze --ckpt …` (report.py, version 1), every array's length checked. */
export function isWeightReport(v: unknown): v is WeightReport {
  if (
    !isObj(v) ||
    v.version !== 1 ||
    v.mode !== 'analyze' ||
    !isStr(v.method) ||
    !isNum(v.threshold) ||
    !isNum(v.router_eps)
  )
    return false;
  const cks = v.checkpoints;
  if (!Array.isArray(cks) || cks.length < 1 || cks.length > MAX_CHECKPOINTS) return false;
  if (!cks.every((c) => isObj(c) && isStr(c.path) && (c.step === null || isInt(c.step)))) return false;
  if (!Array.isArray(v.parents) || v.parents.length > MAX_EXPERTS || !v.parents.every(isParent)) return false;
  if (
    !Array.isArray(v.layers) ||
    v.layers.length > MAX_LAYERS ||
    !v.layers.every((l) => isWeightLayer(l, cks.length))
  )
    return false;
  return (
    Array.isArray(v.warnings) &&
    v.warnings.length <= 100_000 &&
    v.warnings.every(isWeightWarning) &&
    Array.isArray(v.genealogy)
  );
}

function isTensorChange(v: unknown): v is TensorChange {
  return (
    isObj(v) &&
    isStr(v.name, 1000) &&
    Array.isArray(v.shape) &&
    v.shape.length <= 16 &&
    v.shape.every((x) => isInt(x) && x >= 0) &&
    isStr(v.dtype_a, 32) &&
    isStr(v.dtype_b, 32) &&
    isCell(v.norm_a) &&
    isCell(v.abs_change) &&
    isCell(v.rel_change)
  );
}

/** The JSON of `moelab analyze --compare A B`. */
export function isCompareReport(v: unknown): v is CompareReport {
  return (
    isObj(v) &&
    v.version === 1 &&
    v.mode === 'compare' &&
    isStr(v.a) &&
    isStr(v.b) &&
    isInt(v.num_tensors) &&
    isInt(v.num_changed) &&
    v.num_changed >= 0 &&
    v.num_changed <= v.num_tensors &&
    Array.isArray(v.tensors) &&
    v.tensors.length === v.num_changed &&
    v.tensors.every(isTensorChange)
  );
}

function isWeightsTarget(v: unknown): v is WeightsTarget {
  return (
    isObj(v) && (v.kind === 'run' || v.kind === 'checkpoint' || v.kind === 'pair') && isStr(v.label, 1000)
  );
}

function isAnalysisStatus(v: Obj): v is Obj & AnalysisStatusMessage {
  const job = v.job;
  return (
    (v.target === null || isWeightsTarget(v.target)) &&
    (v.state === 'none' || v.state === 'running' || v.state === 'failed' || v.state === 'unavailable') &&
    isStr(v.detail, 2000) &&
    (job === undefined ||
      (isObj(job) && isInt(job.index) && isInt(job.count) && job.index >= 1 && job.index <= job.count))
  );
}

function isAnalysisResult(v: Obj): v is Obj & AnalysisResultMessage {
  return (
    isWeightsTarget(v.target) &&
    typeof v.cached === 'boolean' &&
    isNum(v.writtenAt) &&
    isWeightReport(v.report) &&
    (v.compare === undefined || isCompareReport(v.compare))
  );
}

function isWeightsInit(v: unknown): boolean {
  return (
    v === undefined ||
    (isObj(v) && (v.target === null || isWeightsTarget(v.target)) && typeof v.show === 'boolean')
  );
}

export function parseHostToRouter(v: unknown): HostToRouterMessage | undefined {
  if (!isObj(v)) return undefined;
  switch (v.type) {
    case 'init':
      return v.panel === 'router' &&
        isStrArray(v.runIds) &&
        isRunList(v.runs) &&
        Array.isArray(v.routing) &&
        v.routing.every(isRoutingBlock) &&
        isWeightsInit(v.weights)
        ? (v as unknown as HostToRouterMessage)
        : undefined;
    case 'analysisStatus':
      return isAnalysisStatus(v) ? (v as unknown as HostToRouterMessage) : undefined;
    case 'analysisResult':
      return isAnalysisResult(v) ? (v as unknown as HostToRouterMessage) : undefined;
    case 'appendRouting':
      return Array.isArray(v.routing) && v.routing.every(isRoutingBlock)
        ? (v as unknown as HostToRouterMessage)
        : undefined;
    case 'runs':
      return isRunList(v.runs) ? (v as unknown as HostToRouterMessage) : undefined;
    default:
      return undefined;
  }
}

function isRouterWarning(v: unknown): v is RouterWarning {
  return (
    isObj(v) &&
    isStr(v.runId) &&
    (v.kind === 'dead' || v.kind === 'collapse') &&
    Number.isInteger(v.layer) &&
    isRouterKind(v.router) &&
    isNumArray(v.experts) &&
    isStr(v.message, 500)
  );
}

/** A file name the user will see in a save dialog: no paths, no control characters. */
function isSafeFileName(v: unknown): v is string {
  return isStr(v, 200) && v.length > 0 && !/[\\/\x00-\x1f]/.test(v) && v !== '.' && v !== '..';
}

export function parseWebviewToHost(v: unknown): WebviewToHostMessage | undefined {
  if (!isObj(v)) return undefined;
  switch (v.type) {
    case 'ready':
      return { type: 'ready' };
    case 'saveFile':
      return isSafeFileName(v.suggestedName) &&
        (v.format === 'png' || v.format === 'csv') &&
        isStr(v.data, MAX_FILE_DATA)
        ? { type: 'saveFile', suggestedName: v.suggestedName, format: v.format, data: v.data }
        : undefined;
    case 'routerWarnings':
      return Array.isArray(v.warnings) && v.warnings.length <= 10_000 && v.warnings.every(isRouterWarning)
        ? { type: 'routerWarnings', warnings: v.warnings }
        : undefined;
    case 'protocolError':
      return isNum(v.dropped) && isStr(v.detail, 1000)
        ? { type: 'protocolError', dropped: v.dropped, detail: v.detail }
        : undefined;
    case 'requestAnalysis':
      return typeof v.force === 'boolean' ? { type: 'requestAnalysis', force: v.force } : undefined;
    case 'copyText':
      return isCopyFormat(v.format) && isStr(v.text, MAX_FILE_DATA)
        ? { type: 'copyText', format: v.format, text: v.text }
        : undefined;
    default:
      return undefined;
  }
}

function isCopyFormat(v: unknown): v is CopyFormat {
  return v === 'markdown' || v === 'latex' || v === 'csv';
}

function isStrArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => isStr(s));
}

export const X_AXES: readonly XAxisMode[] = [
  'step',
  'tokens',
  'flops',
  'time',
  'tokensSinceSeed',
  'flopsSinceSeed',
];

/** Persisted state comes back from VS Code (or an older version of us): check it like a message. */
export function parseDashboardState(v: unknown): DashboardState | undefined {
  if (!isObj(v) || v.panel !== 'dashboard') return undefined;
  const ok =
    isStrArray(v.runIds) &&
    isNum(v.smoothing) &&
    typeof v.logScale === 'boolean' &&
    typeof v.ignoreOutliers === 'boolean' &&
    typeof v.groupByExperiment === 'boolean' &&
    X_AXES.includes(v.xAxis as XAxisMode) &&
    isStr(v.filter) &&
    isStrArray(v.hidden) &&
    isStrArray(v.pinned);
  return ok ? (v as unknown as DashboardState) : undefined;
}

export function parseRouterState(v: unknown): RouterState | undefined {
  if (!isObj(v) || v.panel !== 'router') return undefined;
  const ok =
    isStrArray(v.runIds) &&
    isStr(v.runA) &&
    isStr(v.runB) &&
    (v.router === 'all' || v.router === 'ffn' || v.router === 'attn') &&
    isStr(v.layerFilter) &&
    isNum(v.step) &&
    (v.tab === undefined || v.tab === 'routing' || v.tab === 'weights') &&
    (v.weightsLayer === undefined || isInt(v.weightsLayer)) &&
    (v.weightsRouter === undefined || isRouterKind(v.weightsRouter)) &&
    (v.weightsMatrix === undefined || isStr(v.weightsMatrix, 100));
  return ok ? (v as unknown as RouterState) : undefined;
}

/** The run ids a restored panel was showing, from any state shape (the serializer needs only these). */
export function runIdsFromState(v: unknown): string[] {
  if (isObj(v) && isStrArray(v.runIds)) return v.runIds.slice(0, 1000);
  return [];
}
