// Finds the interpreter that runs the engine (Python extension → moelab.pythonPath → workspace
// .venv with moelab → python3) and checks that the engine is there and new enough.
import { PythonExtension } from '@vscode/python-extension';
import * as vscode from 'vscode';
import {
  chooseInterpreter,
  type EngineProbe,
  type InterpreterChoice,
  probeEngine,
  venvPython,
} from './interpreter';
import { log, why } from '../util/log';

const PYTHON_EXTENSION_ID = 'ms-python.python';

export class EngineLocator implements vscode.Disposable {
  private readonly probes = new Map<string, Promise<EngineProbe>>();
  private readonly disposables: vscode.Disposable[] = [];
  private pythonApi: Promise<PythonExtension | undefined> | undefined;

  constructor() {
    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('moelab.pythonPath')) this.invalidate();
      }),
      vscode.extensions.onDidChange(() => {
        this.pythonApi = undefined;
        this.invalidate();
      }),
    );
  }

  /** Forget cached probes (after an install, or when the interpreter changes). */
  invalidate(): void {
    this.probes.clear();
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }

  /** The Python extension's API, when it is installed. */
  async pythonExtension(): Promise<PythonExtension | undefined> {
    if (!vscode.extensions.getExtension(PYTHON_EXTENSION_ID)) return undefined;
    this.pythonApi ??= PythonExtension.api().then(
      (api) => {
        this.disposables.push(api.environments.onDidChangeActiveEnvironmentPath(() => this.invalidate()));
        return api;
      },
      () => undefined,
    );
    return this.pythonApi;
  }

  private async fromPythonExtension(folder?: vscode.WorkspaceFolder): Promise<string | undefined> {
    const api = await this.pythonExtension();
    if (!api) return undefined;
    try {
      const envPath = api.environments.getActiveEnvironmentPath(folder?.uri);
      const env = await api.environments.resolveEnvironment(envPath);
      return env?.executable.uri?.fsPath;
    } catch (e) {
      log.debug(`the Python extension has no interpreter for this folder: ${why(e)}`);
      return undefined;
    }
  }

  async interpreter(folder = vscode.workspace.workspaceFolders?.[0]): Promise<InterpreterChoice> {
    const pythonExtension = await this.fromPythonExtension(folder);
    const setting = vscode.workspace.getConfiguration('moelab', folder).get<string>('pythonPath');
    let workspaceVenv: string | undefined;
    if (!pythonExtension && !setting && folder) {
      const venv = venvPython(folder.uri.fsPath);
      // Only worth preferring over python3 if the engine is actually installed there.
      if (venv && (await this.probe(venv)).state === 'ok') workspaceVenv = venv;
    }
    return chooseInterpreter({ pythonExtension, setting, workspaceVenv });
  }

  probe(python: string): Promise<EngineProbe> {
    let p = this.probes.get(python);
    if (!p) {
      p = probeEngine(python, vscode.workspace.workspaceFolders?.[0]?.uri.fsPath);
      this.probes.set(python, p);
    }
    return p;
  }
}
