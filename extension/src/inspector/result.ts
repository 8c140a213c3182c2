// The inspection result: a plain typed object (no vscode, no onnxruntime types), shared by the
// editor decorations, the hovers and — for the router panel's token view — the webviews.
import type { RouterKind, TokenizerKind } from './manifest';

export interface InspectedToken {
  id: number;
  /** Printable form for hovers and grids ("␠", "<0xC3>", "ĠHello"). */
  display: string;
  /** UTF-16 offsets into the inspected text; start === end for tokens without text (BOS). */
  start: number;
  end: number;
}

export interface RouterResult {
  layer: number;
  kind: RouterKind;
  numExperts: number;
  /** 0 = soft mixture over all experts. */
  topK: number;
  /** Router probabilities (softmax before top-k), row-major [tokens × numExperts]. */
  probs: Float32Array;
}

export interface InspectionResult {
  exportDir: string;
  modelType: string;
  method: string;
  tokenizer: TokenizerKind;
  maxContext: number;
  /** Windows the text was run in (1 when it fits the context). */
  windows: number;
  tokens: InspectedToken[];
  /** In model order: layer ascending, attention before FFN within a layer. */
  routers: RouterResult[];
  /** Tokens dropped because the selection exceeded the inspector's token limit. */
  truncated: number;
  elapsedMs: number;
}

export interface ExpertProb {
  expert: number;
  prob: number;
}

export function routerKey(r: { layer: number; kind: RouterKind }): string {
  return `L${r.layer}.${r.kind}`;
}

/** The `k` most probable experts of token `t`, most probable first (ties: lower expert first). */
export function topExperts(r: RouterResult, t: number, k: number): ExpertProb[] {
  const row = r.probs.subarray(t * r.numExperts, (t + 1) * r.numExperts);
  const all = Array.from(row, (prob, expert) => ({ expert, prob }));
  all.sort((a, b) => b.prob - a.prob || a.expert - b.expert);
  return all.slice(0, Math.max(1, Math.min(k, r.numExperts)));
}

/** How many experts a token is routed to: top_k, or every expert for a soft router. */
export function routedCount(r: RouterResult): number {
  return r.topK > 0 ? r.topK : r.numExperts;
}

export function topExpert(r: RouterResult, t: number): number {
  const e = r.numExperts;
  let best = 0;
  for (let i = 1; i < e; i++) if (r.probs[t * e + i] > r.probs[t * e + best]) best = i;
  return best;
}
