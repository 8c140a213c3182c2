// "▶ Run experiment" above every *.moelab.json file (or "Submit to Slurm…" with the slurm
// launcher), and "Submit to Slurm" above the sbatch scripts that "Submit to Slurm…" writes.
import * as vscode from 'vscode';
import { launcherKind } from './settings';

export const EXPERIMENT_SELECTOR: vscode.DocumentSelector = { pattern: '**/*.moelab.json' };
export const SBATCH_SELECTOR: vscode.DocumentSelector = { pattern: '**/*.sbatch' };

export class ExperimentCodeLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;
  // The lens title says whether running is possible, so it changes when trust is granted,
  // and where the run goes, so it changes with the launcher.
  private readonly trust = vscode.workspace.onDidGrantWorkspaceTrust(() => this.changed.fire());
  private readonly config = vscode.workspace.onDidChangeConfiguration((e) => {
    if (e.affectsConfiguration('moelab.launcher')) this.changed.fire();
  });

  dispose(): void {
    this.trust.dispose();
    this.config.dispose();
    this.changed.dispose();
  }

  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const top = new vscode.Range(0, 0, 0, 0);
    const lock = vscode.workspace.isTrusted ? '' : ' (needs a trusted workspace)';
    const rel = vscode.workspace.asRelativePath(document.uri);
    if (document.fileName.endsWith('.sbatch')) {
      return [
        new vscode.CodeLens(top, {
          title: `${vscode.workspace.isTrusted ? '$(cloud-upload)' : '$(lock)'} Submit to Slurm${lock}`,
          command: 'moelab.submitSlurmScript',
          arguments: [document.uri],
          tooltip: 'moelab slurm submit --script ' + rel,
        }),
      ];
    }
    const folder = vscode.workspace.getWorkspaceFolder(document.uri);
    if (launcherKind(folder) === 'slurm') {
      return [
        new vscode.CodeLens(top, {
          title: `${vscode.workspace.isTrusted ? '$(cloud-upload)' : '$(lock)'} Submit to Slurm…${lock}`,
          command: 'moelab.submitToSlurm',
          arguments: [document.uri],
          tooltip: 'moelab slurm script ' + rel + ' (shown for editing before submission)',
        }),
      ];
    }
    return [
      new vscode.CodeLens(top, {
        title: vscode.workspace.isTrusted
          ? '$(play) Run experiment'
          : '$(lock) Run experiment (needs a trusted workspace)',
        command: 'moelab.runExperiment',
        arguments: [document.uri],
        tooltip: 'moelab run ' + rel,
      }),
    ];
  }
}
