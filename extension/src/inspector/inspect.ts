// Tokenize → windows → run → one InspectionResult. No vscode and no onnxruntime here: the model
// is any RouterRunner, so tests drive this with fakes and the worker with an ONNX session.
import { InspectorError } from './errors';
import type { RoutingManifest } from './manifest';
import type { InspectionResult, RouterResult } from './result';
import type { TextTokenizer } from './tokens';
import { defaultOverlap, planWindows } from './windows';

export interface RouterRunner {
  /** Runs one window (batch 1); returns each router output, flattened [tokens × experts]. */
  run(ids: number[]): Promise<Map<string, Float32Array>>;
}

export interface InspectOptions {
  /** Longer selections are cut here (and the result says how many tokens were dropped). */
  maxTokens?: number;
  /** Model context per window; defaults to the manifest's max_context. */
  context?: number;
  overlap?: number;
}

export const DEFAULT_MAX_TOKENS = 16384;

export async function inspectText(
  text: string,
  exportDir: string,
  manifest: RoutingManifest,
  tokenizer: TextTokenizer,
  runner: RouterRunner,
  opts: InspectOptions = {},
): Promise<InspectionResult> {
  const t0 = performance.now();
  if (manifest.routers.length === 0) {
    throw new InspectorError(
      `${exportDir}: this ${manifest.modelType} model has no routers (a dense model): nothing to inspect`,
    );
  }
  const all = tokenizer.tokenize(text);
  const maxTokens = opts.maxTokens ?? DEFAULT_MAX_TOKENS;
  const tokens = all.slice(0, maxTokens);
  for (const t of tokens) {
    if (t.id < 0 || t.id >= manifest.vocabSize) {
      throw new InspectorError(
        `token id ${t.id} is outside the model's vocabulary (${manifest.vocabSize}): tokenizer and model do not match`,
      );
    }
  }
  const context = opts.context ?? manifest.maxContext;
  const windows = planWindows(tokens.length, context, opts.overlap ?? defaultOverlap(context));
  const routers: RouterResult[] = manifest.routers.map((r) => ({
    layer: r.layer,
    kind: r.kind,
    numExperts: r.numExperts,
    topK: r.topK,
    probs: new Float32Array(tokens.length * r.numExperts),
  }));
  const ids = tokens.map((t) => t.id);
  for (const w of windows) {
    const outputs = await runner.run(ids.slice(w.start, w.end));
    manifest.routers.forEach((r, i) => {
      const probs = outputs.get(r.output);
      const e = r.numExperts;
      if (!probs || probs.length !== (w.end - w.start) * e) {
        throw new InspectorError(
          `output ${r.output}: expected ${(w.end - w.start) * e} values, got ${probs?.length ?? 'none'}`,
        );
      }
      routers[i].probs.set(probs.subarray((w.keepFrom - w.start) * e), w.keepFrom * e);
    });
  }
  return {
    exportDir,
    modelType: manifest.modelType,
    method: manifest.method,
    tokenizer: manifest.tokenizer.kind,
    maxContext: manifest.maxContext,
    windows: windows.length,
    tokens: tokens.map((t) => ({ id: t.id, display: tokenizer.display(t.id), start: t.start, end: t.end })),
    routers,
    truncated: all.length - tokens.length,
    elapsedMs: performance.now() - t0,
  };
}
