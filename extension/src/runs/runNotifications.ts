// Tells the user when a run they watched finish, fail or diverge. The store only reports
// transitions it saw live, so runs already finished at startup stay quiet.
import * as vscode from 'vscode';
import type { RunStore, StatusChange } from './runStore';

export function registerRunNotifications(store: RunStore): vscode.Disposable {
  return store.onDidChangeStatus((c: StatusChange) => void notify(store, c));
}

async function notify(store: RunStore, { run, current }: StatusChange): Promise<void> {
  const last = store.latestTrain(run.id);
  const loss = typeof last?.loss === 'number' ? ` (loss ${last.loss.toFixed(3)})` : '';
  let pick: string | undefined;
  if (current === 'done') {
    pick = await vscode.window.showInformationMessage(`MoE Lab: run ${run.id} finished${loss}.`, 'Open dashboard');
  } else if (current === 'failed' || current === 'stale') {
    const why = typeof run.error === 'string' ? `: ${run.error}` : current === 'stale' ? ': its process is gone' : '';
    pick = await vscode.window.showErrorMessage(`MoE Lab: run ${run.id} failed${why}.`, 'Open log', 'Open dashboard');
  } else if (current === 'diverged') {
    pick = await vscode.window.showWarningMessage(`MoE Lab: run ${run.id} diverged${loss}.`, 'Open log', 'Open dashboard');
  }
  if (pick === 'Open dashboard') void vscode.commands.executeCommand('moelab.openDashboard', run.id);
  if (pick === 'Open log') void vscode.commands.executeCommand('moelab.openRunLog', run.id);
}
