// Text longer than the model's context is run in overlapping windows. Each token's routing is
// taken from the window where it has the most left context: the first window keeps all its
// tokens, every later one keeps only the tokens past the previous window's end.

export interface TokenWindow {
  /** Tokens [start, end) are fed to the model. */
  start: number;
  end: number;
  /** Results for tokens [keepFrom, end) come from this window. */
  keepFrom: number;
}

/** Overlap by default: a quarter of the context, at most 256 tokens. */
export function defaultOverlap(context: number): number {
  return Math.min(256, Math.floor(context / 4));
}

export function planWindows(n: number, context: number, overlap = defaultOverlap(context)): TokenWindow[] {
  if (!Number.isInteger(context) || context < 1)
    throw new RangeError(`context must be a positive integer, got ${context}`);
  if (!Number.isInteger(overlap) || overlap < 0 || overlap >= context)
    throw new RangeError(`overlap must be in [0, ${context}), got ${overlap}`);
  const out: TokenWindow[] = [];
  let end = 0;
  while (end < n) {
    const start = out.length === 0 ? 0 : end - overlap;
    const next = Math.min(n, start + context);
    out.push({ start, end: next, keepFrom: end });
    end = next;
  }
  return out;
}
