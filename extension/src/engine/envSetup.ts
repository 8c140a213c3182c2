// Sets up a Python for the engine the way the Python extension sets up a project: a dedicated
// virtual environment (the workspace's .venv when the Python extension is there to select it,
// else one in MoE Lab's global storage), torch of the right build, the engine, then selects it.
// pip's output goes to the MoE Lab output channel; the notification shows the step.
import { spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { installArgs } from '../jobs/taskArgs';
import type { EngineLocator } from './locator';
import { envExists, envPython, type PythonInfo, settingTarget, versionString } from './pythonEnv';
import { detectNvidia, newestCpuBuild, torchInstallArgs, torchPlan, torchVersionsArgs } from './torchBuild';

/** Where the engine's own source lies: the workspace's engine/ (editable), else the copy in the .vsix. */
export interface EngineSource {
  editable?: string;
  local?: string;
}

// Without network (or behind a dead index) pip would retry each URL five times with backoff:
// minutes of silence. Fail in seconds instead; pip's own message lands in the output channel.
const PIP_ENV = {
  PIP_RETRIES: '0',
  PIP_TIMEOUT: '5',
  PIP_DEFAULT_TIMEOUT: '5',
  PIP_DISABLE_PIP_VERSION_CHECK: '1',
};

type Progress = vscode.Progress<{ message?: string; increment?: number }>;

export class EngineEnvironments {
  constructor(
    private readonly locator: EngineLocator,
    private readonly globalStorage: string,
    private readonly output: vscode.LogOutputChannel,
  ) {}

  /** The folder a new environment goes to, and how it is named to the user. */
  async target(
    folder?: vscode.WorkspaceFolder,
  ): Promise<{ dir: string; label: string; viaPythonExtension: boolean }> {
    if (folder && (await this.locator.pythonExtension()))
      return {
        dir: path.join(folder.uri.fsPath, '.venv'),
        label: `${folder.name}/.venv`,
        viaPythonExtension: true,
      };
    const dir = path.join(this.globalStorage, 'python');
    return { dir, label: `MoE Lab's storage (${dir})`, viaPythonExtension: false };
  }

  /**
   * Creates the environment from `base`, installs torch and the engine there and selects it for
   * MoE Lab. Resolves to the new interpreter, or undefined (cancelled or failed, already said).
   */
  async create(
    base: PythonInfo,
    source: EngineSource,
    folder?: vscode.WorkspaceFolder,
  ): Promise<string | undefined> {
    const where = await this.target(folder);
    const python = envPython(where.dir);
    this.output.info(
      `MoE Lab: a new environment in ${where.dir} from ${base.executable} (Python ${versionString(base)})`,
    );
    const ok = await vscode.window.withProgress(
      {
        location: vscode.ProgressLocation.Notification,
        title: 'MoE Lab: setting up Python',
        cancellable: true,
      },
      async (progress, token) => {
        if (!envExists(where.dir)) {
          progress.report({ message: `creating ${where.label}…` });
          // A half-made environment is removed; one that only lacks packages is reused next time.
          const existed = existsSync(where.dir);
          const created = await this.step(
            progress,
            token,
            base.executable,
            ['-m', 'venv', where.dir],
            'creating the environment',
          );
          if (!created && !existed) rmSync(where.dir, { recursive: true, force: true });
          if (!created) return false;
          // As the Python extension does: the environment stays out of the user's git status.
          writeFileSync(path.join(where.dir, '.gitignore'), '*\n');
        }
        return this.provision(progress, token, python, source);
      },
    );
    if (!ok) return undefined;
    await this.select(python, where.viaPythonExtension, folder);
    return python;
  }

  /** pip-installs the engine into an existing interpreter (a virtual environment, or one the user insisted on). */
  async installInto(python: string, source: EngineSource, folder?: vscode.WorkspaceFolder): Promise<boolean> {
    this.output.info(`MoE Lab: installing the engine into ${python}`);
    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'MoE Lab', cancellable: true },
      (progress, token) => this.provision(progress, token, python, source, folder?.uri.fsPath),
    );
  }

  /**
   * torch of the machine's build unless the interpreter has one (else pip would take whichever
   * build the index serves as the engine's dependency: on Linux PyPI's CUDA one), then the engine.
   */
  private async provision(
    progress: Progress,
    token: vscode.CancellationToken,
    python: string,
    source: EngineSource,
    cwd?: string,
  ): Promise<boolean> {
    const torch = await this.capture(python, ['-c', 'import torch; print(torch.__version__)'], token, false);
    if (/^\d+\.\d+/.test(torch.trim())) {
      this.output.info(`MoE Lab: keeping torch ${torch.trim()} in ${python}`);
    } else {
      const plan = torchPlan(
        process.platform,
        detectNvidia({ platform: process.platform, pathVar: process.env.PATH ?? '' }),
      );
      this.output.info(`MoE Lab: ${plan.reason}`);
      let pinned: string | undefined;
      if (plan.pinCpuBuild) {
        pinned = newestCpuBuild(await this.capture(python, torchVersionsArgs(plan), token));
        this.output.info(
          `MoE Lab: newest CPU build of torch on the indexes: ${pinned ?? 'none found, letting pip choose'}`,
        );
      }
      const what = `installing torch (${plan.reason.replace(/\.$/, '')})`;
      if (!(await this.step(progress, token, python, torchInstallArgs(plan, pinned), what, cwd)))
        return false;
    }
    return this.step(
      progress,
      token,
      python,
      ['-m', ...installArgs(source)],
      'installing the MoE Lab engine',
      cwd,
    );
  }

  /** Makes `python` the interpreter MoE Lab uses: the Python extension's choice for the folder, else moelab.pythonPath. */
  private async select(
    python: string,
    viaPythonExtension: boolean,
    folder?: vscode.WorkspaceFolder,
  ): Promise<void> {
    const api = viaPythonExtension ? await this.locator.pythonExtension() : undefined;
    if (api && folder) {
      await api.environments.updateActiveEnvironmentPath(python, folder.uri);
    } else {
      const config = vscode.workspace.getConfiguration('moelab', folder);
      const target = settingTarget(config.inspect('pythonPath'), !viaPythonExtension);
      await config.update(
        'pythonPath',
        python,
        target === 'global'
          ? vscode.ConfigurationTarget.Global
          : target === 'workspace'
            ? vscode.ConfigurationTarget.Workspace
            : vscode.ConfigurationTarget.WorkspaceFolder,
      );
    }
    this.locator.invalidate();
    this.output.info(`MoE Lab: selected ${python}`);
  }

  /** Runs one step with its output streamed to the channel; false when it failed (said) or was cancelled. */
  private async step(
    progress: Progress,
    token: vscode.CancellationToken,
    command: string,
    args: string[],
    what: string,
    cwd?: string,
  ): Promise<boolean> {
    progress.report({ message: `${what}…` });
    this.output.info(`$ ${[command, ...args].map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}`);
    let last = 0;
    const { code, tail } = await this.spawnStreamed(command, args, token, cwd, (line) => {
      // The notification follows pip ("Collecting torch", "Installing collected packages ..."), at most 4 times a second.
      if (
        Date.now() - last > 250 &&
        /^\s*(Collecting|Downloading|Building|Installing|Successfully)/.test(line)
      ) {
        last = Date.now();
        progress.report({ message: `${what}: ${line.trim().slice(0, 90)}` });
      }
    });
    if (token.isCancellationRequested) {
      this.output.info(`MoE Lab: cancelled while ${what}`);
      return false;
    }
    if (code === 0) return true;
    const hint = /ensurepip is not available|No module named venv/.test(tail)
      ? ' This Python lacks venv: on Debian or Ubuntu install the python3-venv package.'
      : '';
    this.output.error(`${what} failed (exit code ${code ?? 'unknown'})`);
    this.output.show(true);
    void vscode.window.showErrorMessage(
      `MoE Lab: ${what} failed (exit code ${code ?? 'unknown'}).${hint} See the MoE Lab output.`,
    );
    return false;
  }

  /** stdout of a command whose failure is no error (pip index versions is only a hint). */
  private async capture(
    command: string,
    args: string[],
    token: vscode.CancellationToken,
    echo = true,
  ): Promise<string> {
    let out = '';
    await this.spawnStreamed(command, args, token, undefined, (line) => (out += line + '\n'), echo);
    return out;
  }

  private spawnStreamed(
    command: string,
    args: string[],
    token: vscode.CancellationToken,
    cwd: string | undefined,
    onLine: (line: string) => void,
    echo = true,
  ): Promise<{ code: number | null; tail: string }> {
    return new Promise((resolve) => {
      const child = spawn(command, args, {
        cwd,
        env: { ...process.env, ...PIP_ENV, PYTHONUNBUFFERED: '1' },
        windowsHide: true,
      });
      let tail = '';
      // One log line per line of pip (stdout and stderr each keep their unfinished line).
      const reader = () => {
        let partial = '';
        return {
          take: (chunk: Buffer) => {
            const text = chunk.toString();
            tail = (tail + text).slice(-4000);
            const lines = (partial + text).split(/\r?\n|\r/);
            partial = lines.pop() ?? '';
            lines.forEach(line);
          },
          flush: () => partial && line(partial),
        };
      };
      const line = (l: string) => {
        if (echo && l.trim()) this.output.info(l);
        onLine(l);
      };
      const out = reader();
      const err = reader();
      child.stdout.on('data', out.take);
      child.stderr.on('data', err.take);
      const cancel = token.onCancellationRequested(() => child.kill());
      child.on('error', (e) => {
        cancel.dispose();
        this.output.error(`${command}: ${e.message}`);
        resolve({ code: null, tail: String(e) });
      });
      child.on('close', (code) => {
        cancel.dispose();
        out.flush();
        err.flush();
        resolve({ code, tail });
      });
    });
  }
}
