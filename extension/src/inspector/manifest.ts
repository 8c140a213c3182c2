// routing.json, written by `moelab export --format onnx` beside model.onnx (engine/moelab/export/manifest.py).
// Validated field by field so a stale or foreign file gives one message naming it, not a crash later.
import { InspectorError } from './errors';

export const MANIFEST_FILE = 'routing.json';
export const MANIFEST_FORMAT = 'moelab-routing';
export const MANIFEST_VERSION = 1;

export type RouterKind = 'ffn' | 'attn';
export type TokenizerKind = 'byte-level' | 'hf';

export interface ManifestRouter {
  layer: number;
  kind: RouterKind;
  /** ONNX output name, e.g. router_probs.L3.ffn; shape [batch, seq, numExperts]. */
  output: string;
  numExperts: number;
  /** 0 = soft mixture over all experts (BAM attention). */
  topK: number;
}

export interface RoutingManifest {
  model: string;
  modelType: string;
  method: string;
  sourceCheckpoint: string;
  maxContext: number;
  vocabSize: number;
  numLayers: number;
  inputName: string;
  routers: ManifestRouter[];
  tokenizer: { kind: TokenizerKind; file: string; vocabSize: number };
}

/** Parses the text of routing.json; `where` names the file in messages. */
export function parseManifest(text: string, where: string): RoutingManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new InspectorError(`${where}: invalid JSON (${(e as Error).message})`);
  }
  const m = asObject(raw, where);
  if (m.format !== MANIFEST_FORMAT)
    throw new InspectorError(`${where}: not a ${MANIFEST_FORMAT} manifest (re-run MoE Lab export)`);
  if (m.version !== MANIFEST_VERSION) {
    throw new InspectorError(
      `${where}: version ${JSON.stringify(m.version)} is not supported (expected ${MANIFEST_VERSION}); re-export the checkpoint`,
    );
  }
  const field = (k: string) => `${where}: field "${k}"`;
  const tok = asObject(m.tokenizer, field('tokenizer'));
  const tokKind = tok.kind;
  if (tokKind !== 'byte-level' && tokKind !== 'hf')
    throw new InspectorError(
      `${field('tokenizer.kind')} is ${JSON.stringify(tokKind)} (expected byte-level or hf)`,
    );
  const input = asObject(m.input, field('input'));
  if (!Array.isArray(m.routers)) throw new InspectorError(`${field('routers')} is not a list`);
  const routers = m.routers.map((r, i) => parseRouter(r, `${where}: routers[${i}]`));
  const outputs = new Set(routers.map((r) => r.output));
  if (outputs.size !== routers.length) throw new InspectorError(`${field('routers')} names an output twice`);
  return {
    model: str(m.model, field('model')),
    modelType: str(m.model_type, field('model_type')),
    method: typeof m.method === 'string' ? m.method : '',
    sourceCheckpoint: typeof m.source_checkpoint === 'string' ? m.source_checkpoint : '',
    maxContext: posInt(m.max_context, field('max_context')),
    vocabSize: posInt(m.vocab_size, field('vocab_size')),
    numLayers: posInt(m.num_layers, field('num_layers')),
    inputName: str(input.name, field('input.name')),
    routers,
    tokenizer: {
      kind: tokKind,
      file: str(tok.file, field('tokenizer.file')),
      vocabSize: posInt(tok.vocab_size, field('tokenizer.vocab_size')),
    },
  };
}

function parseRouter(raw: unknown, where: string): ManifestRouter {
  const r = asObject(raw, where);
  if (r.kind !== 'ffn' && r.kind !== 'attn')
    throw new InspectorError(`${where}: kind ${JSON.stringify(r.kind)} (expected ffn or attn)`);
  const numExperts = posInt(r.num_experts, `${where}: num_experts`);
  const topK = r.top_k;
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 0 || topK > numExperts) {
    throw new InspectorError(`${where}: top_k ${JSON.stringify(topK)} (expected 0..${numExperts})`);
  }
  return {
    layer: nonNegInt(r.layer, `${where}: layer`),
    kind: r.kind,
    output: str(r.output, `${where}: output`),
    numExperts,
    topK,
  };
}

function asObject(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new InspectorError(`${where}: not a JSON object`);
  return v as Record<string, unknown>;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || !v) throw new InspectorError(`${where} is missing or not a string`);
  return v;
}

function nonNegInt(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new InspectorError(`${where} is not a non-negative integer`);
  return v;
}

function posInt(v: unknown, where: string): number {
  const n = nonNegInt(v, where);
  if (n === 0) throw new InspectorError(`${where} must be positive`);
  return n;
}
