// Tells the user when runs they watched finish, fail or diverge. The store only reports
// transitions it saw live, so runs already finished at startup stay quiet.
//
// Failures speak at once. Finished runs are gathered and reported in one message once nothing
// is running any more: a pipeline finishes a dozen runs in a row, and a toast per run would bury
// the workbench.
import * as vscode from 'vscode';
import type { RunInfo } from './model';
import type { RunStore, StatusChange } from './runStore';

/** How long the store must stay without running runs before the finished ones are reported. */
const QUIET_MS = 4000;

export function registerRunNotifications(store: RunStore): vscode.Disposable {
  const finished = new FinishedRuns(store);
  const sub = store.onDidChangeStatus((c: StatusChange) => {
    if (c.current === 'done') finished.add(c.run);
    else void notifyProblem(store, c);
    finished.arm();
  });
  return vscode.Disposable.from(sub, finished);
}

class FinishedRuns implements vscode.Disposable {
  private pending: RunInfo[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly store: RunStore) {}

  add(run: RunInfo): void {
    if (!this.pending.some((r) => r.id === run.id)) this.pending.push(run);
  }

  /** (Re)starts the quiet period; each status change pushes the report back. */
  arm(): void {
    if (!this.pending.length) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), QUIET_MS);
  }

  private flush(): void {
    const running = this.store
      .list()
      .some((r) => (r.status === 'running' || r.status === 'queued') && !r.stale);
    if (running) {
      this.arm();
      return;
    }
    const runs = this.pending;
    this.pending = [];
    void notifyFinished(this.store, runs);
  }

  dispose(): void {
    clearTimeout(this.timer);
  }
}

async function notifyFinished(store: RunStore, runs: RunInfo[]): Promise<void> {
  if (!runs.length) return;
  let text: string;
  if (runs.length === 1) {
    const last = store.latestTrain(runs[0].id);
    const loss = typeof last?.loss === 'number' ? ` (loss ${last.loss.toFixed(3)})` : '';
    text = `MoE Lab: run ${runs[0].id} finished${loss}.`;
  } else {
    const groups = [...new Set(runs.map((r) => r.group ?? r.experiment).filter((g): g is string => !!g))];
    const where = groups.length ? ` (${groups.join(', ')})` : '';
    text = `MoE Lab: ${runs.length} runs finished${where}.`;
  }
  const pick = await vscode.window.showInformationMessage(text, 'Open dashboard');
  if (pick)
    void vscode.commands.executeCommand(
      'moelab.openDashboard',
      runs.map((r) => r.id),
    );
}

async function notifyProblem(store: RunStore, { run, current }: StatusChange): Promise<void> {
  const last = store.latestTrain(run.id);
  const loss = typeof last?.loss === 'number' ? ` (loss ${last.loss.toFixed(3)})` : '';
  let pick: string | undefined;
  if (current === 'failed' || current === 'stale') {
    const why =
      typeof run.error === 'string' ? `: ${run.error}` : current === 'stale' ? ': its process is gone' : '';
    pick = await vscode.window.showErrorMessage(
      `MoE Lab: run ${run.id} failed${why}.`,
      'Open log',
      'Open dashboard',
    );
  } else if (current === 'diverged') {
    pick = await vscode.window.showWarningMessage(
      `MoE Lab: run ${run.id} diverged${loss}.`,
      'Open log',
      'Open dashboard',
    );
  }
  if (pick === 'Open dashboard') void vscode.commands.executeCommand('moelab.openDashboard', run.id);
  if (pick === 'Open log') void vscode.commands.executeCommand('moelab.openRunLog', run.id);
}
