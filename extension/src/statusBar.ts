// One status-bar item for the active run: the newest running run's step and loss.
import * as vscode from 'vscode';
import { totalSteps } from './runs/records';
import type { RunStore } from './runs/runStore';

export class RunStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem(
    'moelab.activeRun',
    vscode.StatusBarAlignment.Left,
    50,
  );
  private readonly disposables: vscode.Disposable[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly store: RunStore) {
    this.item.name = 'MoE Lab: active run';
    this.disposables.push(
      this.item,
      store.onDidChangeRuns(() => this.schedule()),
      store.onDidAppend(() => this.schedule()),
    );
    this.update();
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.update();
    }, 500);
  }

  private update(): void {
    const running = this.store
      .list()
      .filter((r) => r.status === 'running' && !r.stale)
      .sort((a, b) => String(b.started ?? '').localeCompare(String(a.started ?? '')));
    const run = running[0];
    if (!run) {
      this.item.hide();
      return;
    }
    const last = this.store.latestTrain(run.id);
    const total = totalSteps(run);
    const pct = last && total ? ` ${Math.min(100, Math.round((100 * last.step) / total))}%` : '';
    const loss = typeof last?.loss === 'number' ? ` · loss ${last.loss.toFixed(3)}` : '';
    this.item.text = `$(sync~spin) ${run.id}${pct}${loss}`;
    const more = running.length > 1 ? `\n\n${running.length - 1} more running` : '';
    this.item.tooltip = new vscode.MarkdownString(
      `**MoE Lab** — ${run.id}\n\nstep ${last?.step ?? '–'}${total ? ` / ${total}` : ''}${loss}${more}\n\nClick to open the dashboard.`,
    );
    this.item.command = { command: 'moelab.openDashboard', title: 'Open dashboard', arguments: [run.id] };
    this.item.show();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }
}
