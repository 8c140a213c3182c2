// The Lineage view: seed → branches → upcycle → MoE (and the tune and eval runs), from the pure
// lineage model (lineage.ts), rebuilt when the run store's runs change. A run opens its curves
// (dashboard), an upcycle its MoE in the Checkpoints view, an eval run its results; the context
// menu offers the rest (log, folder, checkpoint in the router panel).
import * as vscode from 'vscode';
import { buildLineage, type LineageNode, type LineageRunNode } from './lineage';
import type { RunStoreApi } from './model';
import { STATUS_ICONS } from './runsTreeModel';

const STAGE_ICONS: Readonly<Record<string, string>> = {
  dense: 'circle-large-outline',
  branch: 'git-branch',
  upcycle: 'git-merge',
  moe: 'type-hierarchy',
  eval: 'checklist',
};
const WITH_CURVES = new Set(['dense', 'branch', 'moe']);

export class LineageTreeProvider implements vscode.TreeDataProvider<LineageNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.changed.event;
  private roots: LineageRunNode[] | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly store: RunStoreApi) {
    this.disposables.push(
      this.changed,
      store.onDidChangeRuns(() => this.invalidate()),
    );
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }

  /** Throttled: a pipeline rewrites run.json files in bursts. */
  invalidate(): void {
    this.roots = undefined;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.changed.fire();
    }, 300);
  }

  getChildren(node?: LineageNode): LineageNode[] {
    if (!node) return (this.roots ??= buildLineage(this.store.list().filter((r) => r.slurmOnly !== true)));
    // The runs first, so that seed → upcycle → MoE reads as one chain; what an upcycle mixed below them.
    if (node.kind === 'lineageRun') return [...node.children, ...(node.inputs ? [node.inputs] : [])];
    return node.kind === 'lineageInputs' ? node.children : [];
  }

  getTreeItem(node: LineageNode): vscode.TreeItem {
    const C = vscode.TreeItemCollapsibleState;
    if (node.kind === 'lineageInputs') {
      const item = new vscode.TreeItem(node.label, C.Collapsed);
      item.id = node.key;
      item.iconPath = new vscode.ThemeIcon('references');
      return item;
    }
    if (node.kind === 'lineageCheckpoint') {
      const item = new vscode.TreeItem(node.label, C.None);
      item.id = node.key;
      item.description = node.description;
      item.tooltip = `${node.role} checkpoint\n${node.dir}`;
      item.iconPath = new vscode.ThemeIcon('database');
      item.contextValue = 'moelab.lineageCheckpoint';
      item.command = {
        command: 'moelab.revealCheckpoint',
        title: 'Reveal in Checkpoints View',
        arguments: [node],
      };
      return item;
    }
    const stage = String(node.run.stage ?? 'other');
    const item = new vscode.TreeItem(
      node.label,
      node.children.length ? C.Expanded : node.inputs ? C.Collapsed : C.None,
    );
    item.id = node.key;
    item.description = node.description;
    item.tooltip = new vscode.MarkdownString(node.tooltip);
    const status = STATUS_ICONS[node.status];
    const icon = node.status === 'done' || !status ? (STAGE_ICONS[stage] ?? 'circle-outline') : status.id;
    item.iconPath = new vscode.ThemeIcon(
      icon,
      status?.color && node.status !== 'done' ? new vscode.ThemeColor(status.color) : undefined,
    );
    item.contextValue = `moelab.lineageRun.${stage}`;
    item.command = WITH_CURVES.has(stage)
      ? { command: 'moelab.openDashboard', title: 'Open Dashboard', arguments: [node] }
      : stage === 'eval'
        ? { command: 'moelab.openResults', title: 'Open Results', arguments: [node] }
        : { command: 'moelab.revealCheckpoint', title: 'Reveal in Checkpoints View', arguments: [node] };
    return item;
  }
}
