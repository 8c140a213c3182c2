// Commands are invoked from tree items (node, selected nodes), from the status bar and
// notifications (a run id), from CodeLens (a Uri) and from the palette (nothing). These
// helpers turn whatever arrived into what the command needs.
import type { CheckpointRef } from '../checkpoints/checkpointLoader';
import type { CheckpointNode } from '../checkpoints/checkpointsTree';
import type { RunsTreeNode } from '../runs/runsTreeModel';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** Run ids from a tree node (a group gives all its runs), a run id, or a multi-selection. */
export function runIdsFrom(arg: unknown, selection?: unknown): string[] {
  const items = Array.isArray(selection) && selection.length > 0 ? selection : arg === undefined ? [] : [arg];
  const ids: string[] = [];
  const visit = (x: unknown) => {
    if (typeof x === 'string') ids.push(x);
    else if (Array.isArray(x)) x.forEach(visit);
    else if (isObject(x) && 'kind' in x) {
      const node = x as unknown as RunsTreeNode;
      if (node.kind === 'run') ids.push(node.run.id);
      else node.children.forEach(visit);
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
    const node = x as unknown as CheckpointNode;
    if (node.kind === 'checkpoint') refs.push(node.ref);
    else if (node.kind === 'runGroup' && node.checkpoints.length) {
      refs.push(node.checkpoints.find((c) => c.isLatest) ?? node.checkpoints[node.checkpoints.length - 1]);
    }
  }
  return refs;
}
