// Turns a flat tensor list + config.json into the structure the Checkpoints view shows:
// layers → attention / attention experts / FFN experts / routers, with total and active
// parameter counts computed from header shapes only. No vscode import.
import type { TensorInfo } from './safetensorsHeader';
import { ATTN_PER_TOKEN_MATRICES, matchTensor } from './tensorLayout';

export type GroupKind =
  | 'attention'
  | 'attentionExperts'
  | 'attentionRouter'
  | 'ffn'
  | 'ffnExperts'
  | 'ffnRouter'
  | 'norm'
  | 'other';

export const GROUP_LABELS: Readonly<Record<GroupKind, string>> = {
  attention: 'Attention',
  attentionExperts: 'Attention experts',
  attentionRouter: 'Attention router',
  ffn: 'FFN',
  ffnExperts: 'FFN experts',
  ffnRouter: 'FFN router',
  norm: 'Norms',
  other: 'Other',
};

const GROUP_ORDER: GroupKind[] = [
  'attentionRouter',
  'attention',
  'attentionExperts',
  'ffnRouter',
  'ffn',
  'ffnExperts',
  'norm',
  'other',
];

export interface ExpertGroup {
  expert: number;
  tensors: TensorInfo[];
  params: number;
}

export interface TensorGroup {
  kind: GroupKind;
  tensors: TensorInfo[];
  /** Only for the *Experts kinds. */
  experts: ExpertGroup[];
  params: number;
}

export interface LayerModel {
  index: number;
  groups: TensorGroup[];
  params: number;
}

export interface MoelabMeta {
  method?: string;
  options?: Record<string, unknown>;
  parents?: { path?: string; sha256?: string }[];
  moe?: Record<string, unknown>;
}

export interface CheckpointSummary {
  modelType?: string;
  numLayers: number;
  /** FFN experts per MoE layer (max over layers), 0 for dense. */
  numExperts: number;
  topK?: number;
  attentionExperts: number;
  attentionTopK?: number | 'soft';
  moelab?: MoelabMeta;
  totalParams: number;
  activeParams: number;
  bytesOnDisk: number;
  tensorCount: number;
  dtypes: Record<string, number>;
}

export interface CheckpointModel {
  summary: CheckpointSummary;
  layers: LayerModel[];
  /** Tensors outside model.layers.N (embeddings, final norm, lm_head…). */
  outside: TensorInfo[];
}

export function tensorParams(t: Pick<TensorInfo, 'shape'>): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

export function classifyTensor(name: string): { layer?: number; kind: GroupKind; expert?: number } {
  const l = matchTensor('layer', name);
  if (!l) return { kind: 'other' };
  const layer = Number(l.layer);
  const ae = matchTensor('attn_expert', name);
  if (ae) return { layer, kind: 'attentionExperts', expert: Number(ae.expert) };
  if (matchTensor('attn_router', name)) return { layer, kind: 'attentionRouter' };
  if (matchTensor('attention', name)) return { layer, kind: 'attention' };
  const fe = matchTensor('ffn_expert', name);
  if (fe) return { layer, kind: 'ffnExperts', expert: Number(fe.expert) };
  if (matchTensor('ffn_router', name)) return { layer, kind: 'ffnRouter' };
  if (matchTensor('ffn', name)) return { layer, kind: 'ffn' };
  if (/norm/.test(l.rest)) return { layer, kind: 'norm' };
  return { layer, kind: 'other' };
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function asRecord(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

/** Reads the keys that matter from a config.json object of any of the supported model types. */
export function readConfig(config: unknown): {
  modelType?: string;
  topK?: number;
  numExperts?: number;
  attentionTopK?: number | 'soft';
  moelab?: MoelabMeta;
} {
  const c = asRecord(config) ?? {};
  const m = asRecord(c.moelab);
  // The engine's own config.json keeps the MoE settings at top level (`moe`).
  const moe = asRecord(m?.moe) ?? asRecord(c.moe);
  const moelab: MoelabMeta | undefined = m
    ? {
        method: typeof m.method === 'string' ? m.method : undefined,
        options: asRecord(m.options),
        parents: Array.isArray(m.parents)
          ? m.parents.map((p) => {
              const r = asRecord(p) ?? {};
              return {
                path: typeof r.path === 'string' ? r.path : undefined,
                sha256: typeof r.sha256 === 'string' ? r.sha256 : undefined,
              };
            })
          : undefined,
        moe,
      }
    : undefined;
  const attnRaw = moe?.attn_top_k ?? moe?.attention_top_k ?? moe?.attention;
  // attn_top_k 0 (or ≥ the experts) is the engine's soft mixture.
  const attentionTopK = attnRaw === 'soft' || attnRaw === 0 ? 'soft' : num(attnRaw);
  return {
    modelType: typeof c.model_type === 'string' ? c.model_type : undefined,
    topK:
      num(c.num_experts_per_tok) ?? num(moe?.top_k) ?? num(moe?.ffn_top_k) ?? num(moe?.num_experts_per_tok),
    numExperts: num(c.num_local_experts) ?? num(c.num_experts) ?? num(moe?.num_experts),
    attentionTopK,
    moelab,
  };
}

export function buildCheckpointModel(
  tensors: readonly TensorInfo[],
  config: unknown,
  bytesOnDisk: number,
): CheckpointModel {
  const cfg = readConfig(config);
  const layers = new Map<number, Map<GroupKind, TensorGroup>>();
  const outside: TensorInfo[] = [];
  const dtypes: Record<string, number> = {};
  let totalParams = 0;

  for (const t of tensors) {
    const p = tensorParams(t);
    totalParams += p;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + p;
    const c = classifyTensor(t.name);
    if (c.layer === undefined) {
      outside.push(t);
      continue;
    }
    let groups = layers.get(c.layer);
    if (!groups) layers.set(c.layer, (groups = new Map()));
    let g = groups.get(c.kind);
    if (!g) groups.set(c.kind, (g = { kind: c.kind, tensors: [], experts: [], params: 0 }));
    g.params += p;
    if (c.expert !== undefined) {
      let eg = g.experts.find((x) => x.expert === c.expert);
      if (!eg) g.experts.push((eg = { expert: c.expert, tensors: [], params: 0 }));
      eg.tensors.push(t);
      eg.params += p;
    } else {
      g.tensors.push(t);
    }
  }

  let numExperts = 0;
  let attentionExperts = 0;
  let inactive = 0;
  const layerModels: LayerModel[] = [...layers.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([index, groups]) => {
      const list = GROUP_ORDER.flatMap((k) => (groups.has(k) ? [groups.get(k)!] : []));
      for (const g of list) {
        g.experts.sort((a, b) => a.expert - b.expert);
        g.tensors.sort((a, b) => a.name.localeCompare(b.name));
        for (const e of g.experts) e.tensors.sort((a, b) => a.name.localeCompare(b.name));
      }
      const ffnE = groups.get('ffnExperts');
      if (ffnE && ffnE.experts.length > 0) {
        const e = ffnE.experts.length;
        numExperts = Math.max(numExperts, e);
        // Experts differ in size only in exotic checkpoints; the mean keeps the count honest then too.
        const k = Math.min(cfg.topK ?? e, e);
        inactive += ffnE.params * (1 - k / e);
      }
      const attE = groups.get('attentionExperts');
      if (attE && attE.experts.length > 0) {
        const e = attE.experts.length;
        attentionExperts = Math.max(attentionExperts, e);
        // BAM's attention mixture is soft by default: every expert runs for every token. Top-k
        // runs Q and O of the selected experts only; expert-KV's K and V run for every expert
        // (later tokens routed there read them), as the engine counts (analysis/param_count.py).
        const qo = attE.experts
          .flatMap((x) => x.tensors)
          .filter((t) => ATTN_PER_TOKEN_MATRICES.includes(matchTensor('attn_expert', t.name)?.matrix ?? ''));
        if (typeof cfg.attentionTopK === 'number')
          inactive += qo.reduce((s, t) => s + tensorParams(t), 0) * (1 - Math.min(cfg.attentionTopK, e) / e);
      }
      return { index, groups: list, params: list.reduce((s, g) => s + g.params, 0) };
    });

  outside.sort((a, b) => a.name.localeCompare(b.name));
  return {
    summary: {
      modelType: cfg.modelType,
      numLayers: layerModels.length,
      numExperts: numExperts || (cfg.numExperts ?? 0),
      topK: cfg.topK,
      attentionExperts,
      attentionTopK: attentionExperts > 0 ? (cfg.attentionTopK ?? 'soft') : undefined,
      moelab: cfg.moelab,
      totalParams,
      activeParams: Math.round(totalParams - inactive),
      bytesOnDisk,
      tensorCount: tensors.length,
      dtypes,
    },
    layers: layerModels,
    outside,
  };
}

/** 1234567 → "1.23M"; parameter counts read better with SI suffixes than with digits. */
export function formatCount(n: number): string {
  const units = ['', 'K', 'M', 'B', 'T'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? String(Math.round(v)) : `${v.toPrecision(3).replace(/\.?0+$/, '')}${units[i]}`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function describeSummary(s: CheckpointSummary): string {
  const parts: string[] = [];
  parts.push(
    s.moelab?.method ? `${s.modelType ?? '?'} · ${s.moelab.method}` : (s.modelType ?? 'unknown model'),
  );
  if (s.numExperts > 0) parts.push(`${s.numExperts} experts${s.topK ? `, top-${s.topK}` : ''}`);
  if (s.attentionExperts > 0)
    parts.push(
      `${s.attentionExperts} attn experts (${s.attentionTopK === 'soft' ? 'soft' : `top-${s.attentionTopK}`})`,
    );
  parts.push(
    s.activeParams !== s.totalParams
      ? `${formatCount(s.totalParams)} total, ${formatCount(s.activeParams)} active`
      : `${formatCount(s.totalParams)} params`,
  );
  return parts.join(' · ');
}

export interface SummaryRow {
  label: string;
  value: string;
  tooltip?: string;
}

/** The rows under a checkpoint's "Summary" item. */
export function summaryRows(s: CheckpointSummary): SummaryRow[] {
  const rows: SummaryRow[] = [{ label: 'model type', value: s.modelType ?? 'unknown' }];
  if (s.moelab?.method) rows.push({ label: 'method', value: s.moelab.method });
  rows.push({ label: 'layers', value: String(s.numLayers) });
  if (s.numExperts > 0)
    rows.push({ label: 'FFN experts', value: `${s.numExperts}${s.topK ? `, top-${s.topK} per token` : ''}` });
  if (s.attentionExperts > 0) {
    rows.push({
      label: 'attention experts',
      value: `${s.attentionExperts}, ${s.attentionTopK === 'soft' ? 'soft mixture (all active)' : `top-${s.attentionTopK}`}`,
    });
  }
  rows.push({
    label: 'total parameters',
    value: formatCount(s.totalParams),
    tooltip: s.totalParams.toLocaleString('en-US'),
  });
  rows.push({
    label: 'active per token',
    value: `${formatCount(s.activeParams)}${s.totalParams > 0 ? ` (${((100 * s.activeParams) / s.totalParams).toFixed(1)}%)` : ''}`,
    tooltip: `${s.activeParams.toLocaleString('en-US')}: FFN experts count top-k of E; soft attention experts all count, top-k ones Q and O of k (K and V of all).`,
  });
  rows.push({ label: 'on disk', value: formatBytes(s.bytesOnDisk) });
  rows.push({ label: 'tensors', value: String(s.tensorCount) });
  const dt = Object.entries(s.dtypes).sort((a, b) => b[1] - a[1]);
  if (dt.length)
    rows.push({ label: 'dtypes', value: dt.map(([d, n]) => `${d} ${formatCount(n)}`).join(', ') });
  for (const [i, p] of (s.moelab?.parents ?? []).entries()) {
    rows.push({
      label: `parent ${i + 1}`,
      value: p.path ?? '?',
      tooltip: p.sha256 ? `sha256 ${p.sha256}` : undefined,
    });
  }
  if (s.moelab?.options && Object.keys(s.moelab.options).length) {
    rows.push({
      label: 'options',
      value: JSON.stringify(s.moelab.options),
      tooltip: JSON.stringify(s.moelab.options, null, 2),
    });
  }
  if (s.moelab?.moe && Object.keys(s.moelab.moe).length) {
    rows.push({
      label: 'moe',
      value: JSON.stringify(s.moelab.moe),
      tooltip: JSON.stringify(s.moelab.moe, null, 2),
    });
  }
  return rows;
}
