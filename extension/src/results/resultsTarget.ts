// Which file the Results panel shows for a run, and which of the store's runs a results label
// stands for (so a model keeps its run's colour). vscode-free.
import * as path from 'node:path';
import type { RunInfo } from '../runs/model';

export const RESULTS_FILE = /^(study|eval)\.json$/;

/**
 * The files that may hold an eval run's results, best first: the study.json of the study it
 * belongs to (next to the run folders, or one level up for runs/<experiment>/<run-id>), then the
 * run's own eval.json.
 */
export function resultsCandidates(runDir: string): string[] {
  const parent = path.dirname(runDir);
  return [
    path.join(parent, 'study.json'),
    path.join(path.dirname(parent), 'study.json'),
    path.join(runDir, 'eval.json'),
  ];
}

/**
 * The run a results label names among the runs next to the results file: "<experiment>-<label>"
 * or "<experiment>-moe-<label>" (the MoE run, not its upcycle or eval), first by id.
 */
export function runForLabel(
  label: string,
  runs: readonly RunInfo[],
  resultsDir: string,
): RunInfo | undefined {
  const inside = (dir: string): boolean => {
    const rel = path.relative(resultsDir, dir);
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  };
  return [...runs]
    .filter((r) => r.stage !== 'upcycle' && r.stage !== 'eval' && inside(r.dir) && r.id.endsWith(`-${label}`))
    .sort((a, b) => a.id.length - b.id.length || a.id.localeCompare(b.id))[0];
}
