// Runtime validation of protocol.ts messages, used on receipt by both sides
// (webview bundles and the extension host). No DOM, no vscode: plain checks.
// Each parser returns undefined for anything malformed, never throws.
import type {
  Column,
  DashboardState,
  HostToDashboardMessage,
  HostToRouterMessage,
  MetricBlock,
  RouterState,
  RouterWarning,
  RoutingBlock,
  RoutingRow,
  RunSummary,
  WebviewToHostMessage,
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
    isOptStr(v.stage)
  );
}

function isRunList(v: unknown): v is RunSummary[] {
  return Array.isArray(v) && v.every(isRunSummary);
}

export function isMetricBlock(v: unknown): v is MetricBlock {
  if (!isObj(v) || !isStr(v.runId) || (v.split !== 'train' && v.split !== 'eval')) return false;
  const step = v.step;
  if (step instanceof Float64Array) {
    for (let i = 0; i < step.length; i++) if (!Number.isFinite(step[i])) return false;
  } else if (!isNumArray(step)) return false;
  const n = (step as ArrayLike<number>).length;
  if (!isCellArray(v.tokens, n) || !isCellArray(v.time, n) || !isObj(v.values)) return false;
  for (const key of Object.keys(v.values)) {
    if (key.length > 200 || !isCellArray(v.values[key], n)) return false;
  }
  return true;
}

function isRouterKind(v: unknown): v is 'ffn' | 'attn' {
  return v === 'ffn' || v === 'attn';
}

export function isRoutingRow(v: unknown): v is RoutingRow {
  if (!isObj(v) || !isNum(v.step) || !Number.isInteger(v.layer) || !isRouterKind(v.router)) return false;
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
  if (v.coactivation !== undefined) {
    if (!Array.isArray(v.coactivation) || v.coactivation.length !== e) return false;
    for (const row of v.coactivation) if (!isNumArray(row) || row.length !== e) return false;
  }
  return true;
}

export function isRoutingBlock(v: unknown): v is RoutingBlock {
  return isObj(v) && isStr(v.runId) && Array.isArray(v.rows) && v.rows.every(isRoutingRow);
}

export function parseHostToDashboard(v: unknown): HostToDashboardMessage | undefined {
  if (!isObj(v)) return undefined;
  switch (v.type) {
    case 'init':
      return v.panel === 'dashboard' && isStrArray(v.runIds) && isRunList(v.runs) && Array.isArray(v.blocks) && v.blocks.every(isMetricBlock)
        ? (v as unknown as HostToDashboardMessage)
        : undefined;
    case 'appendMetrics':
      return Array.isArray(v.blocks) && v.blocks.every(isMetricBlock) ? (v as unknown as HostToDashboardMessage) : undefined;
    case 'runs':
      return isRunList(v.runs) ? (v as unknown as HostToDashboardMessage) : undefined;
    default:
      return undefined;
  }
}

export function parseHostToRouter(v: unknown): HostToRouterMessage | undefined {
  if (!isObj(v)) return undefined;
  switch (v.type) {
    case 'init':
      return v.panel === 'router' && isStrArray(v.runIds) && isRunList(v.runs) && Array.isArray(v.routing) && v.routing.every(isRoutingBlock)
        ? (v as unknown as HostToRouterMessage)
        : undefined;
    case 'appendRouting':
      return Array.isArray(v.routing) && v.routing.every(isRoutingBlock) ? (v as unknown as HostToRouterMessage) : undefined;
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
      return isSafeFileName(v.suggestedName) && (v.format === 'png' || v.format === 'csv') && isStr(v.data, MAX_FILE_DATA)
        ? { type: 'saveFile', suggestedName: v.suggestedName, format: v.format, data: v.data }
        : undefined;
    case 'routerWarnings':
      return Array.isArray(v.warnings) && v.warnings.length <= 10_000 && v.warnings.every(isRouterWarning)
        ? { type: 'routerWarnings', warnings: v.warnings }
        : undefined;
    case 'protocolError':
      return isNum(v.dropped) && isStr(v.detail, 1000) ? { type: 'protocolError', dropped: v.dropped, detail: v.detail } : undefined;
    default:
      return undefined;
  }
}

function isStrArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => isStr(s));
}

/** Persisted state comes back from VS Code (or an older version of us): check it like a message. */
export function parseDashboardState(v: unknown): DashboardState | undefined {
  if (!isObj(v) || v.panel !== 'dashboard') return undefined;
  const ok =
    isStrArray(v.runIds) &&
    isNum(v.smoothing) &&
    typeof v.logScale === 'boolean' &&
    typeof v.ignoreOutliers === 'boolean' &&
    typeof v.groupByExperiment === 'boolean' &&
    (v.xAxis === 'step' || v.xAxis === 'tokens' || v.xAxis === 'time') &&
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
    isNum(v.step);
  return ok ? (v as unknown as RouterState) : undefined;
}

/** The run ids a restored panel was showing, from any state shape (the serializer needs only these). */
export function runIdsFromState(v: unknown): string[] {
  if (isObj(v) && isStrArray(v.runIds)) return v.runIds.slice(0, 1000);
  return [];
}
