// The Runs view: maps the pure tree model to TreeItems and refreshes on store events
// (throttled, because metrics arrive many times a second during training).
import * as vscode from 'vscode';
import type { SlurmJobs } from '../jobs/slurmJobs';
import type { RunStore } from './runStore';
import { buildRunsTree, type RunsTreeNode } from './runsTreeModel';

export class RunsTreeProvider implements vscode.TreeDataProvider<RunsTreeNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.changed.event;
  private roots: RunsTreeNode[] = [];
  private dirty = true;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly store: RunStore,
    private readonly slurm?: SlurmJobs,
  ) {
    this.disposables.push(
      this.changed,
      ...(slurm ? [slurm.onDidChange(() => this.invalidate())] : []),
      store.onDidChangeRuns(() => this.invalidate()),
      store.onDidAppend(() => this.invalidate()),
    );
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }

  invalidate(): void {
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.changed.fire();
    }, 300);
  }

  getChildren(node?: RunsTreeNode): RunsTreeNode[] {
    if (!node) {
      if (this.dirty) {
        const slurm = this.slurm;
        this.roots = buildRunsTree(
          [...this.store.list(), ...(slurm?.pendingWithoutRun() ?? [])],
          (id) => this.store.latestTrain(id),
          (id) => this.store.badLines(id),
          slurm ? (dir) => slurm.stateFor(dir) : undefined,
        );
        this.dirty = false;
      }
      return this.roots;
    }
    return node.kind === 'run' ? [] : node.children;
  }

  getTreeItem(node: RunsTreeNode): vscode.TreeItem {
    if (node.kind === 'run') {
      const item = new vscode.TreeItem(node.label, vscode.TreeItemCollapsibleState.None);
      item.id = node.key;
      item.description = node.description;
      item.tooltip = new vscode.MarkdownString(node.tooltip);
      item.iconPath = new vscode.ThemeIcon(
        node.icon.id,
        node.icon.color ? new vscode.ThemeColor(node.icon.color) : undefined,
      );
      // Eval runs carry ".eval" so their menu offers Open Results (package.json view/item/context).
      item.contextValue = `moelab.run.${node.status}${node.run.stage === 'eval' ? '.eval' : ''}`;
      item.resourceUri = vscode.Uri.file(node.run.dir);
      item.command = { command: 'moelab.openDashboard', title: 'Open dashboard', arguments: [node] };
      if (node.run.slurmOnly === true) {
        // A Slurm job whose run has no run.json yet: nothing to chart, but it can be cancelled and its log read.
        item.contextValue = `moelab.slurmJob.${node.status}`;
        item.command = undefined;
      }
      return item;
    }
    const item = new vscode.TreeItem(node.label, vscode.TreeItemCollapsibleState.Expanded);
    item.id = node.key;
    item.description = node.description;
    item.iconPath = new vscode.ThemeIcon(node.kind === 'experiment' ? 'beaker' : 'layers');
    item.contextValue = node.kind === 'experiment' ? 'moelab.experiment' : 'moelab.stage';
    return item;
  }
}
