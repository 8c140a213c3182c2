// Header-only comparison of two checkpoints, used until the engine's `moelab analyze` exists
// (and in untrusted workspaces, where no engine may run). No vscode import.
import type { TensorInfo } from './safetensorsHeader';
import { formatCount, tensorParams } from './checkpointModel';

export interface CheckpointDiff {
  onlyA: TensorInfo[];
  onlyB: TensorInfo[];
  changed: { a: TensorInfo; b: TensorInfo }[];
  same: number;
}

export function diffTensors(a: readonly TensorInfo[], b: readonly TensorInfo[]): CheckpointDiff {
  const mapB = new Map(b.map((t) => [t.name, t]));
  const namesA = new Set(a.map((t) => t.name));
  const diff: CheckpointDiff = { onlyA: [], onlyB: [], changed: [], same: 0 };
  for (const ta of a) {
    const tb = mapB.get(ta.name);
    if (!tb) diff.onlyA.push(ta);
    else if (ta.dtype !== tb.dtype || ta.shape.join(',') !== tb.shape.join(','))
      diff.changed.push({ a: ta, b: tb });
    else diff.same++;
  }
  for (const tb of b) if (!namesA.has(tb.name)) diff.onlyB.push(tb);
  const byName = (x: TensorInfo, y: TensorInfo) => x.name.localeCompare(y.name);
  diff.onlyA.sort(byName);
  diff.onlyB.sort(byName);
  diff.changed.sort((x, y) => byName(x.a, y.a));
  return diff;
}

const fmt = (t: TensorInfo) => `${t.name}  ${t.dtype}[${t.shape.join(', ')}]`;

/** Renders the diff as a unified-diff-like text, so the editor's diff colouring applies. */
export function renderDiff(labelA: string, labelB: string, d: CheckpointDiff, errors: string[] = []): string {
  const paramsA = d.onlyA.reduce((s, t) => s + tensorParams(t), 0);
  const paramsB = d.onlyB.reduce((s, t) => s + tensorParams(t), 0);
  const lines = [
    `--- ${labelA}`,
    `+++ ${labelB}`,
    `# ${d.same} tensors identical in name, dtype and shape; ${d.changed.length} changed;`,
    `# ${d.onlyA.length} only in A (${formatCount(paramsA)} params); ${d.onlyB.length} only in B (${formatCount(paramsB)} params).`,
    '# Header comparison only: values are not read.',
    ...errors.map((e) => `# error: ${e}`),
    '',
  ];
  for (const c of d.changed) lines.push(`-${fmt(c.a)}`, `+${fmt(c.b)}`);
  for (const t of d.onlyA) lines.push(`-${fmt(t)}`);
  for (const t of d.onlyB) lines.push(`+${fmt(t)}`);
  return lines.join('\n') + '\n';
}

/**
 * Why two checkpoints cannot be compared tensor by tensor (other names or shapes; a dtype alone
 * is fine, the engine compares values in float64), or undefined when they can.
 */
export function architectureMismatch(labelA: string, labelB: string, d: CheckpointDiff): string | undefined {
  const shapes = d.changed.filter((c) => c.a.shape.join(',') !== c.b.shape.join(','));
  if (!d.onlyA.length && !d.onlyB.length && !shapes.length) return undefined;
  const parts: string[] = [];
  if (d.onlyA.length)
    parts.push(
      `${d.onlyA.length} tensor${d.onlyA.length > 1 ? 's' : ''} only in ${labelA} (e.g. ${d.onlyA[0].name})`,
    );
  if (d.onlyB.length) parts.push(`${d.onlyB.length} only in ${labelB} (e.g. ${d.onlyB[0].name})`);
  if (shapes.length) {
    const s = shapes[0];
    parts.push(
      `${shapes.length} with another shape (e.g. ${s.a.name}: [${s.a.shape.join(', ')}] vs [${s.b.shape.join(', ')}])`,
    );
  }
  return `${labelA} and ${labelB} have different architectures, so their weights cannot be compared tensor by tensor: ${parts.join('; ')}.`;
}
