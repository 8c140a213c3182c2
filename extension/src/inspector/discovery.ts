// Which models the inspector can offer: ONNX exports (routing.json + model.onnx) and checkpoints
// not exported yet (config.json + safetensors), which it can export on request.
import * as path from 'node:path';

export interface ExportChoice {
  kind: 'export';
  dir: string;
  modelType?: string;
  method?: string;
  source?: string;
}

export interface CheckpointChoice {
  kind: 'checkpoint';
  dir: string;
  /** Where `moelab export` will write: <dir>/onnx. */
  exportDir: string;
}

export type ModelChoice = ExportChoice | CheckpointChoice;

export function exportDirFor(checkpointDir: string): string {
  return path.join(checkpointDir, 'onnx');
}

/** Exports first (the last used at the top), then checkpoints that have no export yet. */
export function modelChoices(
  exports: ExportChoice[],
  checkpointDirs: string[],
  lastUsed?: string,
): ModelChoice[] {
  const exported = new Set<string>();
  for (const e of exports) {
    exported.add(path.resolve(e.dir, '..'));
    if (e.source) exported.add(path.resolve(e.source));
  }
  const sorted = [...exports].sort(
    (a, b) => Number(b.dir === lastUsed) - Number(a.dir === lastUsed) || a.dir.localeCompare(b.dir),
  );
  const ckpts: CheckpointChoice[] = [...new Set(checkpointDirs)]
    .filter((d) => !exported.has(path.resolve(d)))
    .sort((a, b) => a.localeCompare(b))
    .map((dir) => ({ kind: 'checkpoint', dir, exportDir: exportDirFor(dir) }));
  return [...sorted, ...ckpts];
}
