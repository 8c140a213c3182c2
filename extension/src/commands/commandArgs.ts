// Commands are invoked from tree items (node, selected nodes), from the status bar and
// notifications (a run id), from CodeLens (a Uri) and from the palette (nothing). These
// helpers turn whatever arrived into what the command needs.
import * as path from 'node:path';
import type { CheckpointRef } from '../checkpoints/checkpointLoader';
import type { CheckpointNode } from '../checkpoints/checkpointsTree';
import type { LineageNode } from '../runs/lineage';
import type { RunsTreeNode } from '../runs/runsTreeModel';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/**
 * Run ids from a tree node (a Runs view group gives all its runs; a Lineage node its own run, not
 * its descendants), a run id, or a multi-selection.
 */
export function runIdsFrom(arg: unknown, selection?: unknown): string[] {
  const items = Array.isArray(selection) && selection.length > 0 ? selection : arg === undefined ? [] : [arg];
  const ids: string[] = [];
  const visit = (x: unknown) => {
    if (typeof x === 'string') ids.push(x);
    else if (Array.isArray(x)) x.forEach(visit);
    else if (isObject(x) && 'kind' in x) {
      const node = x as unknown as RunsTreeNode | LineageNode;
      if (node.kind === 'run' || node.kind === 'lineageRun') ids.push(node.run.id);
      else if (node.kind === 'lineageCheckpoint') {
        if (node.runId) ids.push(node.runId);
      } else if (node.kind === 'experiment' || node.kind === 'stage') node.children.forEach(visit);
    }
  };
  items.forEach(visit);
  return [...new Set(ids)];
}

/** Checkpoint refs from checkpoint tree nodes (a run group gives its latest checkpoint). */
export function checkpointRefsFrom(arg: unknown, selection?: unknown): CheckpointRef[] {
  const items = Array.isArray(selection) && selection.length > 0 ? selection : arg === undefined ? [] : [arg];
  const refs: CheckpointRef[] = [];
  for (const x of items) {
    if (!isObject(x)) continue;
    const node = x as unknown as CheckpointNode | LineageNode;
    if (node.kind === 'checkpoint') refs.push(node.ref);
    else if (node.kind === 'lineageCheckpoint')
      refs.push({ dir: node.dir, label: path.basename(node.dir), runId: node.runId });
    else if (node.kind === 'runGroup' && node.checkpoints.length) {
      refs.push(node.checkpoints.find((c) => c.isLatest) ?? node.checkpoints[node.checkpoints.length - 1]);
    }
  }
  return refs;
}

/** The run of a Lineage run node (whose checkpoint a command opens), else undefined. */
export function lineageRunId(arg: unknown): string | undefined {
  if (!isObject(arg)) return undefined;
  const node = arg as unknown as LineageNode;
  return node.kind === 'lineageRun' && isObject(node.run) && typeof node.run.id === 'string'
    ? node.run.id
    : undefined;
}
