// The lineage of runs (issue 19 §2): seed → branches → upcycle → MoE, built from the `parents`
// each run.json records (ARCHITECTURE §4). A parent is a run id, or a path to another run's
// checkpoint (or folder), mapped to that run as the dashboard's "since the seed" axes map it
// (sinceSeed.ts). A run sits under its first parent that names a run; an upcycle's other parents
// are listed beside it. The Lineage view (lineageTree.ts) maps these nodes to TreeItems. No vscode
// import.
import * as path from 'node:path';
import type { RunInfo, ShownStatus } from './model';
import { shownStatus } from './runStore';
import { resolveParents, runAtDir, splitCheckpointPath } from './sinceSeed';
import { statusLabel } from './runsTreeModel';

/** A checkpoint a run was built from, as its config names it (an upcycle's seed and experts). */
export interface LineageCheckpointNode {
  kind: 'lineageCheckpoint';
  key: string;
  /** The checkpoint folder as the config names it (absolute when the config's path is). */
  dir: string;
  role: 'seed' | 'expert';
  /** The run that holds it, where one does. */
  runId?: string;
  label: string;
  description: string;
}

/** The checkpoints an upcycle mixed (UpIT's are several checkpoints of one tune run). */
export interface LineageInputsNode {
  kind: 'lineageInputs';
  key: string;
  label: string;
  children: LineageCheckpointNode[];
}

export interface LineageRunNode {
  kind: 'lineageRun';
  key: string;
  run: RunInfo;
  status: ShownStatus;
  label: string;
  description: string;
  /** Markdown. */
  tooltip: string;
  /** The run it sits under, if any. */
  parentId?: string;
  /** Resolved parents besides the one it sits under (an upcycle's branches). */
  otherParents: string[];
  /** Parents that name no known run (deleted, or in another runs folder). */
  missingParents: string[];
  /** Its parents lead back to itself: shown as a root to break the loop. */
  cycle: boolean;
  inputs?: LineageInputsNode;
  children: LineageRunNode[];
}

export type LineageNode = LineageRunNode | LineageInputsNode | LineageCheckpointNode;

const STAGE_ORDER = ['dense', 'branch', 'upcycle', 'moe', 'eval'];
const stageRank = (s: unknown): number => {
  const i = STAGE_ORDER.indexOf(String(s ?? ''));
  return i < 0 ? STAGE_ORDER.length : i;
};

/** The checkpoints an upcycle run's config says it mixed (`seed`, `experts`), each mapped to its run. */
function inputsOf(run: RunInfo, runs: readonly RunInfo[]): LineageInputsNode | undefined {
  const cfg = run.config ?? {};
  const paths: { role: 'seed' | 'expert'; dir: string }[] = [];
  if (typeof cfg.seed === 'string' && cfg.seed) paths.push({ role: 'seed', dir: cfg.seed });
  if (Array.isArray(cfg.experts))
    for (const e of cfg.experts) if (typeof e === 'string' && e) paths.push({ role: 'expert', dir: e });
  if (paths.length < 2) return undefined;
  const children = paths.map(({ role, dir }, i): LineageCheckpointNode => {
    const owner = runAtDir(splitCheckpointPath(dir).dir, runs, run);
    // Relative paths were relative to wherever the engine ran: shown as written.
    const rel = owner && path.isAbsolute(dir) ? path.relative(owner.dir, dir) : '';
    const inside = rel && !rel.startsWith('..') && !path.isAbsolute(rel);
    return {
      kind: 'lineageCheckpoint',
      key: `lineage-ckpt:${run.dir}#${i}`,
      dir,
      role,
      ...(owner ? { runId: owner.id } : {}),
      label: owner ? `${owner.id}${inside ? ` / ${rel.split(path.sep).join('/')}` : ''}` : dir,
      description: role,
    };
  });
  return {
    kind: 'lineageInputs',
    key: `lineage-inputs:${run.dir}`,
    label: `mixed from ${children.length} checkpoints`,
    children,
  };
}

function describe(n: LineageRunNode): string {
  const parts: string[] = [String(n.run.stage ?? 'run')];
  if (n.run.method && n.run.stage !== 'dense') parts.push(String(n.run.method));
  if (n.status !== 'done') parts.push(statusLabel(n.status));
  if (n.otherParents.length) parts.push(`also from ${n.otherParents.join(', ')}`);
  if (n.missingParents.length) parts.push(`parent not found: ${n.missingParents.join(', ')}`);
  if (n.cycle) parts.push('parents loop back to it');
  return parts.join(' · ');
}

function tooltipOf(n: LineageRunNode): string {
  const lines = [`**${n.run.id}** — ${n.description}`, ''];
  if (n.parentId) lines.push(`- under: ${n.parentId}`);
  if (n.otherParents.length) lines.push(`- also from: ${n.otherParents.join(', ')}`);
  if (n.missingParents.length)
    lines.push(`- parents not found among the runs: ${n.missingParents.join(', ')}`);
  if (n.cycle) lines.push('- its parents lead back to itself: shown at the top level');
  if (n.inputs) for (const c of n.inputs.children) lines.push(`- ${c.role}: ${c.label}`);
  lines.push('', `\`${n.run.dir}\``);
  return lines.join('\n');
}

const byStageThenStart = (a: LineageRunNode, b: LineageRunNode): number =>
  stageRank(a.run.stage) - stageRank(b.run.stage) ||
  String(a.run.started ?? '').localeCompare(String(b.run.started ?? '')) ||
  a.label.localeCompare(b.label);

/**
 * The lineage forest: roots are runs without a parent that names a known run (seeds, and runs
 * whose parents are gone); each run appears once, under its first resolved parent. Parents that
 * loop (a → b → a) are broken at one run of the loop, which becomes a root marked `cycle`.
 */
export function buildLineage(runs: readonly RunInfo[]): LineageRunNode[] {
  const nodes = new Map<RunInfo, LineageRunNode>();
  const primary = new Map<LineageRunNode, LineageRunNode>();
  for (const run of runs) {
    nodes.set(run, {
      kind: 'lineageRun',
      key: `lineage:${run.dir}`,
      run,
      status: shownStatus(run),
      label: run.id,
      description: '',
      tooltip: '',
      otherParents: [],
      missingParents: [],
      cycle: false,
      children: [],
    });
  }
  for (const [run, node] of nodes) {
    const inputs = inputsOf(run, runs);
    if (inputs) node.inputs = inputs;
    // The parent references as the dashboard's "since the seed" axes read them (runs/sinceSeed.ts).
    const { links, missing } = resolveParents(run, runs);
    node.missingParents.push(...missing);
    for (const [i, link] of links.entries()) {
      if (i === 0) primary.set(node, nodes.get(link.run)!);
      else node.otherParents.push(link.run.id);
    }
  }
  // Break loops: from each run, walk up the first parents; a walk that returns to a run it
  // passed has found a loop, cut at the run where it closed.
  const settled = new Set<LineageRunNode>();
  for (const start of nodes.values()) {
    const onPath = new Set<LineageRunNode>();
    let n: LineageRunNode | undefined = start;
    while (n && !settled.has(n) && !onPath.has(n)) {
      onPath.add(n);
      n = primary.get(n);
    }
    if (n && onPath.has(n)) {
      const cut: LineageRunNode = n;
      const was = primary.get(cut)!;
      primary.delete(cut);
      cut.cycle = true;
      cut.otherParents.unshift(was.run.id);
    }
    for (const x of onPath) settled.add(x);
  }
  const roots: LineageRunNode[] = [];
  for (const node of nodes.values()) {
    const parent = primary.get(node);
    if (parent) {
      node.parentId = parent.run.id;
      parent.children.push(node);
    } else roots.push(node);
  }
  for (const node of nodes.values()) {
    node.children.sort(byStageThenStart);
    node.description = describe(node);
    node.tooltip = tooltipOf(node);
  }
  return roots.sort(byStageThenStart);
}
