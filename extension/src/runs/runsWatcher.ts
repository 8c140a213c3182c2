// Feeds file-system events under the runs directories to the store (and the checkpoints view).
// Re-created when the settings or the workspace folders change.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { runsDirectories } from '../settings';

export class RunsWatcher implements vscode.Disposable {
  private watchers: vscode.Disposable[] = [];
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly onEvent: (uri: vscode.Uri) => void) {
    this.rewatch();
    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('moelab.runsDirectories')) this.rewatch();
      }),
      vscode.workspace.onDidChangeWorkspaceFolders(() => this.rewatch()),
    );
  }

  private rewatch(): void {
    for (const w of this.watchers) w.dispose();
    this.watchers = [];
    for (const root of runsDirectories()) {
      const folder = vscode.workspace.workspaceFolders?.find(
        (f) => !path.relative(f.uri.fsPath, root).startsWith('..'),
      );
      // Inside a workspace folder the pattern works before the runs folder exists (demo not run yet).
      const pattern = folder
        ? new vscode.RelativePattern(
            folder,
            `${path.relative(folder.uri.fsPath, root).split(path.sep).join('/') || '.'}/**`,
          )
        : new vscode.RelativePattern(vscode.Uri.file(root), '**');
      const w = vscode.workspace.createFileSystemWatcher(pattern);
      w.onDidCreate(this.onEvent);
      w.onDidChange(this.onEvent);
      w.onDidDelete(this.onEvent);
      this.watchers.push(w);
    }
  }

  dispose(): void {
    for (const w of [...this.watchers, ...this.disposables]) w.dispose();
  }
}
