// "▶ Run experiment" above every *.moelab.json file.
import * as vscode from 'vscode';

export const EXPERIMENT_SELECTOR: vscode.DocumentSelector = { pattern: '**/*.moelab.json' };

export class ExperimentCodeLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;
  // The lens title says whether running is possible, so it changes when trust is granted.
  private readonly trust = vscode.workspace.onDidGrantWorkspaceTrust(() => this.changed.fire());

  dispose(): void {
    this.trust.dispose();
    this.changed.dispose();
  }

  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const top = new vscode.Range(0, 0, 0, 0);
    return [
      new vscode.CodeLens(top, {
        title: vscode.workspace.isTrusted ? '$(play) Run experiment' : '$(lock) Run experiment (needs a trusted workspace)',
        command: 'moelab.runExperiment',
        arguments: [document.uri],
        tooltip: 'moelab run ' + vscode.workspace.asRelativePath(document.uri),
      }),
    ];
  }
}
