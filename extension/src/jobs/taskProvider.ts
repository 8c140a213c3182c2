// Lets tasks.json entries of type "moelab" resolve, and offers the demo and the workspace's
// experiments in "Run Task".
import * as path from 'node:path';
import * as vscode from 'vscode';
import { isMoelabTaskDefinition, type JobRunner, TASK_TYPE } from './jobRunner';
import { demoArgs, runExperimentArgs } from './taskArgs';
import { runsDirectories } from '../settings';

export class MoelabTaskProvider implements vscode.TaskProvider {
  constructor(private readonly runner: JobRunner) {}

  async provideTasks(): Promise<vscode.Task[]> {
    if (!vscode.workspace.isTrusted) return [];
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) return [];
    const { python } = await this.runner.locator.interpreter(folder);
    const base = folder.uri.fsPath;
    const runsDir = runsDirectories(folder)[0] ?? path.join(base, 'runs');
    const tasks = [
      this.runner.engineTask(
        { type: TASK_TYPE, command: 'demo', args: demoArgs(runsDir, base).slice(1) },
        python,
        folder,
        'demo (quick)',
      ),
    ];
    const experiments = await vscode.workspace.findFiles('**/*.moelab.json', '**/node_modules/**', 50);
    for (const uri of experiments) {
      const args = runExperimentArgs(uri.fsPath, base).slice(1);
      tasks.push(
        this.runner.engineTask(
          { type: TASK_TYPE, command: 'run', args },
          python,
          folder,
          `run ${path.relative(base, uri.fsPath)}`,
        ),
      );
    }
    return tasks;
  }

  async resolveTask(task: vscode.Task): Promise<vscode.Task | undefined> {
    const def = task.definition;
    if (!isMoelabTaskDefinition(def) || def.command.startsWith('_')) return undefined;
    const folder = typeof task.scope === 'object' ? task.scope : vscode.workspace.workspaceFolders?.[0];
    const { python } = await this.runner.locator.interpreter(folder);
    return this.runner.engineTask(def, python, folder, task.name);
  }
}
