// Makes sure the engine answers in the chosen interpreter before a job starts. When it does not,
// the first offer is a dedicated environment (envSetup.ts); installing into the interpreter itself
// is offered only for a virtual environment, or a global one the user chose, and never for an
// externally managed Python (PEP 668).
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { EngineEnvironments, EngineSource } from './envSetup';
import { type EngineProbe, MIN_ENGINE_VERSION } from './interpreter';
import type { EngineLocator } from './locator';
import { inPlaceInstall, inspectPython, MIN_PYTHON, supportedPython, versionString } from './pythonEnv';
import { log, why } from '../util/log';

/** An engine/ folder whose pyproject.toml names the moelab project. */
export function engineSourceIn(dir: string): string | undefined {
  const pyproject = path.join(dir, 'engine', 'pyproject.toml');
  try {
    return existsSync(pyproject) && /name\s*=\s*"moelab"/.test(readFileSync(pyproject, 'utf8'))
      ? path.dirname(pyproject)
      : undefined;
  } catch (e) {
    log.trace(`no engine source in ${dir}: ${why(e)}`);
    return undefined;
  }
}

const CREATE = 'Create Environment';

export class EngineGate {
  constructor(
    private readonly locator: EngineLocator,
    private readonly extensionPath: string,
    private readonly environments: EngineEnvironments,
  ) {}

  /** The interpreter to run the engine with, or undefined when it is missing and was not installed. */
  async ensureEngine(folder?: vscode.WorkspaceFolder): Promise<string | undefined> {
    const { python } = await this.locator.interpreter(folder);
    const probe = await this.locator.probe(python);
    if (probe.state === 'ok') return python;
    return this.offer(probe, folder);
  }

  /** The "Install Engine" command: the same offer, also when the engine is there already. */
  async install(folder = vscode.workspace.workspaceFolders?.[0]): Promise<boolean> {
    const { python } = await this.locator.interpreter(folder);
    this.locator.invalidate();
    const probe = await this.locator.probe(python);
    return (await this.offer(probe, folder)) !== undefined;
  }

  private source(folder?: vscode.WorkspaceFolder): EngineSource {
    const editable = folder ? engineSourceIn(folder.uri.fsPath) : undefined;
    return { editable, local: editable ? undefined : engineSourceIn(this.extensionPath) };
  }

  private async offer(probe: EngineProbe, folder?: vscode.WorkspaceFolder): Promise<string | undefined> {
    const choice = await this.locator.interpreter(folder);
    const { python } = choice;
    const info = probe.state === 'noPython' ? undefined : await inspectPython(python);
    if (!info) {
      const pick = await vscode.window.showErrorMessage(
        `MoE Lab: no Python interpreter at "${python}". Select one with the Python extension or set moelab.pythonPath.`,
        'Open Settings',
      );
      if (pick) void vscode.commands.executeCommand('workbench.action.openSettings', 'moelab.pythonPath');
      return undefined;
    }
    if (!supportedPython(info)) {
      void vscode.window.showErrorMessage(
        `MoE Lab: ${python} is Python ${versionString(info)}; the engine needs Python ${MIN_PYTHON.join('.')} or newer. Select another with the Python extension or moelab.pythonPath.`,
      );
      return undefined;
    }
    const state =
      probe.state === 'ok'
        ? `${probe.version} is installed in ${python}`
        : probe.state === 'old'
          ? `is too old in ${python} (${probe.version}, needs ${MIN_ENGINE_VERSION})`
          : `is not installed in ${python}`;
    const inPlace = inPlaceInstall(info, choice.source !== 'default');
    const where = await this.environments.target(folder);
    const here = info.venv ? 'Install into This Environment' : 'Install into This Interpreter';
    const buttons = inPlace.allowed ? [CREATE, here] : [CREATE];
    const text =
      `The MoE Lab engine ${state}. ` +
      (inPlace.allowed ? '' : `${inPlace.reason}, so MoE Lab will not install into it. `) +
      `Create a dedicated environment in ${where.label} with torch and the engine?`;
    const pick = await vscode.window.showWarningMessage(text, ...buttons, 'Cancel');
    let ready: string | undefined;
    if (pick === CREATE) {
      ready = await this.environments.create(info, this.source(folder), folder);
    } else if (pick === here && inPlace.allowed) {
      if (inPlace.confirm) {
        const sure = await vscode.window.showWarningMessage(
          inPlace.confirm,
          { modal: true },
          'Install Anyway',
        );
        if (sure !== 'Install Anyway') return undefined;
      }
      ready = (await this.environments.installInto(python, this.source(folder), folder)) ? python : undefined;
    }
    if (!ready) return undefined;
    this.locator.invalidate();
    const chosen = (await this.locator.interpreter(folder)).python;
    const after = await this.locator.probe(chosen);
    if (after.state !== 'ok') {
      void vscode.window.showErrorMessage(
        `MoE Lab: the engine does not answer in ${chosen} after installing.`,
      );
      return undefined;
    }
    void vscode.window.showInformationMessage(`MoE Lab engine ${after.version} is ready in ${chosen}.`);
    return chosen;
  }
}
