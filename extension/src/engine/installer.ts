// Makes sure the engine is installed in the chosen interpreter before a job starts, and
// installs it (as a visible task) when the user agrees.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { installArgs } from '../jobs/taskArgs';
import { MIN_ENGINE_VERSION } from './interpreter';
import type { EngineLocator } from './locator';
import { log, why } from '../util/log';

export type RunProcessTask = (name: string, command: string, args: string[], folder?: vscode.WorkspaceFolder) => Promise<number | undefined>;

/** An engine/ folder whose pyproject.toml names the moelab project. */
export function engineSourceIn(dir: string): string | undefined {
  const pyproject = path.join(dir, 'engine', 'pyproject.toml');
  try {
    return existsSync(pyproject) && /name\s*=\s*"moelab"/.test(readFileSync(pyproject, 'utf8')) ? path.dirname(pyproject) : undefined;
  } catch (e) {
    log.trace(`no engine source in ${dir}: ${why(e)}`);
    return undefined;
  }
}

export class EngineGate {
  constructor(
    private readonly locator: EngineLocator,
    private readonly extensionPath: string,
    private readonly runProcess: RunProcessTask,
  ) {}

  /** The interpreter to run the engine with, or undefined when it is missing and was not installed. */
  async ensureEngine(folder?: vscode.WorkspaceFolder): Promise<string | undefined> {
    const { python } = await this.locator.interpreter(folder);
    const probe = await this.locator.probe(python);
    if (probe.state === 'ok') return python;
    if (probe.state === 'noPython') {
      const pick = await vscode.window.showErrorMessage(
        `MoE Lab: no Python interpreter at "${python}". Select one with the Python extension or set moelab.pythonPath.`,
        'Open Settings',
      );
      if (pick) void vscode.commands.executeCommand('workbench.action.openSettings', 'moelab.pythonPath');
      return undefined;
    }
    const why =
      probe.state === 'old'
        ? `is too old in ${python} (${probe.version}, needs ${MIN_ENGINE_VERSION})`
        : `is not installed in ${python}`;
    const pick = await vscode.window.showWarningMessage(`The MoE Lab engine ${why}. Install it into this interpreter?`, 'Install', 'Cancel');
    if (pick !== 'Install') return undefined;
    return (await this.install(folder)) ? python : undefined;
  }

  /** pip install -e <workspace>/engine, else the engine shipped in the extension, else from the index. */
  async install(folder = vscode.workspace.workspaceFolders?.[0]): Promise<boolean> {
    const { python } = await this.locator.interpreter(folder);
    const editable = folder ? engineSourceIn(folder.uri.fsPath) : undefined;
    const local = editable ? undefined : engineSourceIn(this.extensionPath);
    const code = await this.runProcess('Install MoE Lab engine', python, ['-m', ...installArgs({ editable, local })], folder);
    this.locator.invalidate();
    if (code !== 0) {
      void vscode.window.showErrorMessage(`MoE Lab: installing the engine failed (exit code ${code ?? 'unknown'}). See the task terminal.`);
      return false;
    }
    const probe = await this.locator.probe(python);
    if (probe.state !== 'ok') {
      void vscode.window.showErrorMessage(`MoE Lab: the engine still does not answer in ${python} after installing.`);
      return false;
    }
    void vscode.window.showInformationMessage(`MoE Lab engine ${probe.version} is ready in ${python}.`);
    return true;
  }
}
