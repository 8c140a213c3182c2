// Every engine job is a VS Code task of type `moelab` with a ProcessExecution: the argument
// array goes to the process as is, no shell in between. The runner tracks the executions it
// started so "Stop run" can find them.
import * as os from 'node:os';
import * as vscode from 'vscode';
import type { EngineGate } from '../engine/installer';
import type { EngineLocator } from '../engine/locator';
import type { RunInfo } from '../runs/model';
import { isPidAlive } from '../runs/records';
import { requireTrust } from '../trust';
import { launcherKind, slurmSettings } from '../settings';
import { gracefulStop } from './gracefulStop';
import { slurmTaskArgs } from './slurmArgs';
import { DISTRIBUTED_COMMANDS, engineInvocation, type LauncherSettings } from './taskArgs';

export const TASK_TYPE = 'moelab';

export interface MoelabTaskDefinition extends vscode.TaskDefinition {
  type: typeof TASK_TYPE;
  /** Engine subcommand: demo, run, train, upcycle, eval, export, analyze, inspect. */
  command: string;
  args?: string[];
  cwd?: string;
}

export function isMoelabTaskDefinition(d: vscode.TaskDefinition): d is MoelabTaskDefinition {
  return (
    d.type === TASK_TYPE &&
    typeof d.command === 'string' &&
    d.command.length > 0 &&
    (d.args === undefined ||
      (Array.isArray(d.args) && d.args.every((a: unknown) => typeof a === 'string'))) &&
    (d.cwd === undefined || typeof d.cwd === 'string')
  );
}

export function launcherSettings(folder?: vscode.WorkspaceFolder): LauncherSettings {
  const c = vscode.workspace.getConfiguration('moelab', folder);
  return {
    kind: launcherKind(folder),
    device: c.get<string>('device', 'auto'),
    torchrunProcsPerNode: c.get<number>('torchrun.nprocPerNode', 1),
    slurm: slurmSettings(folder),
  };
}

interface Tracked {
  name: string;
  pid?: number;
  exit: Promise<number | undefined>;
}

export class JobRunner implements vscode.Disposable {
  private readonly tracked = new Map<vscode.TaskExecution, Tracked>();
  private readonly exits = new Map<vscode.TaskExecution, (code: number | undefined) => void>();
  private readonly disposables: vscode.Disposable[] = [];
  private readonly ended = new vscode.EventEmitter<{ name: string; exitCode: number | undefined }>();
  /** Fires when a task this runner started ends (the runs view refreshes then). */
  readonly onDidEndJob = this.ended.event;

  constructor(
    readonly locator: EngineLocator,
    private readonly gate: EngineGate,
  ) {
    this.disposables.push(
      this.ended,
      vscode.tasks.onDidStartTaskProcess((e) => {
        const t = this.tracked.get(e.execution);
        if (t) t.pid = e.processId;
      }),
      vscode.tasks.onDidEndTaskProcess((e) => this.finish(e.execution, e.exitCode)),
      // A task whose process never started ends without onDidEndTaskProcess; give the process
      // event a moment in case the two arrive out of order, so the exit code is not lost.
      vscode.tasks.onDidEndTask((e) => void setTimeout(() => this.finish(e.execution, undefined), 1000)),
    );
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }

  private finish(execution: vscode.TaskExecution, code: number | undefined): void {
    const resolve = this.exits.get(execution);
    const t = this.tracked.get(execution);
    if (!resolve || !t) return;
    this.exits.delete(execution);
    this.tracked.delete(execution);
    resolve(code);
    this.ended.fire({ name: t.name, exitCode: code });
  }

  /** Builds the task for a definition; used by commands and by the TaskProvider's resolveTask. */
  engineTask(
    def: MoelabTaskDefinition,
    python: string,
    folder?: vscode.WorkspaceFolder,
    name?: string,
  ): vscode.Task {
    const cwd =
      def.cwd ?? folder?.uri.fsPath ?? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? os.homedir();
    const launcher = launcherSettings(folder);
    let engineArgs = [def.command, ...(def.args ?? [])];
    const distribute = DISTRIBUTED_COMMANDS.has(def.command);
    // Slurm: the engine writes and submits the sbatch script; the task itself only submits.
    if (distribute && launcher.kind === 'slurm')
      engineArgs = slurmTaskArgs(engineArgs, launcher.slurm ?? {}, cwd);
    const inv = engineInvocation(python, engineArgs, launcher, distribute);
    const task = new vscode.Task(
      def,
      folder ?? vscode.TaskScope.Workspace,
      name ?? `${def.command}${def.args?.length ? ' ' + def.args.join(' ') : ''}`,
      TASK_TYPE,
      new vscode.ProcessExecution(inv.command, inv.args, { cwd, env: inv.env }),
    );
    task.presentationOptions = {
      reveal: vscode.TaskRevealKind.Always,
      panel: vscode.TaskPanelKind.Dedicated,
      clear: true,
    };
    return task;
  }

  /**
   * `moelab <args>` as a task, after the trust check and the engine check. Resolves once the
   * task has started (undefined if it was not launched); `exit` resolves with its exit code.
   */
  async runEngine(
    name: string,
    engineArgs: string[],
    folder = vscode.workspace.workspaceFolders?.[0],
  ): Promise<{ execution: vscode.TaskExecution; exit: Promise<number | undefined> } | undefined> {
    if (!requireTrust(`Running "${name}"`)) return undefined;
    const python = await this.gate.ensureEngine(folder);
    if (!python) return undefined;
    const [command, ...args] = engineArgs;
    return this.execute(this.engineTask({ type: TASK_TYPE, command, args }, python, folder, name), name);
  }

  /** The inspector's entry point: run and wait for the exit code. */
  async runEngineAndWait(name: string, engineArgs: string[]): Promise<number | undefined> {
    const started = await this.runEngine(name, engineArgs);
    return started ? started.exit : undefined;
  }

  private async execute(
    task: vscode.Task,
    name: string,
  ): Promise<{ execution: vscode.TaskExecution; exit: Promise<number | undefined> }> {
    const execution = await vscode.tasks.executeTask(task);
    const exit = new Promise<number | undefined>((resolve) => this.exits.set(execution, resolve));
    this.tracked.set(execution, { name, exit });
    return { execution, exit };
  }

  running(): { execution: vscode.TaskExecution; name: string; pid?: number }[] {
    return [...this.tracked.entries()].map(([execution, t]) => ({ execution, name: t.name, pid: t.pid }));
  }

  /**
   * Stop = SIGTERM (the engine writes a checkpoint on it), then terminate the task if it is
   * still there after a grace period. Runs started elsewhere on this host get SIGTERM after a
   * confirmation; we cannot reach processes on other hosts.
   */
  async stopRun(run: RunInfo | undefined): Promise<void> {
    const mine = this.running();
    let target = run?.pid !== undefined ? mine.find((m) => m.pid === run.pid) : undefined;
    if (!target && !run && mine.length > 0) {
      const pick = await vscode.window.showQuickPick(
        mine.map((m) => ({ label: m.name, description: m.pid ? `pid ${m.pid}` : '', m })),
        { title: 'MoE Lab: stop which job?' },
      );
      target = pick?.m;
      if (!target) return;
    }
    if (target) {
      await this.gracefulStop(target.execution, target.pid, target.name);
      return;
    }
    if (run?.pid !== undefined && (!run.host || run.host === os.hostname()) && isPidAlive(run.pid)) {
      const ok = await vscode.window.showWarningMessage(
        `Run ${run.id} was not started from this window. Send SIGTERM to process ${run.pid}? The engine saves a checkpoint first.`,
        { modal: true },
        'Stop',
      );
      if (ok) process.kill(run.pid, 'SIGTERM');
      return;
    }
    if (mine.length > 0) {
      await this.stopRun(undefined);
      return;
    }
    void vscode.window.showInformationMessage(
      run ? `MoE Lab: run ${run.id} is not running on this host.` : 'MoE Lab: no job is running.',
    );
  }

  private async gracefulStop(
    execution: vscode.TaskExecution,
    pid: number | undefined,
    name: string,
  ): Promise<void> {
    const exit = this.tracked.get(execution)?.exit;
    const target = { name, exit: exit ?? Promise.resolve(), terminate: () => execution.terminate() };
    // Without an exit to wait for there is nothing to give a grace period to.
    if (pid === undefined || !exit) {
      await gracefulStop({ ...target, pid: undefined });
      return;
    }
    await vscode.window.withProgress(
      {
        location: vscode.ProgressLocation.Notification,
        title: `Stopping ${name} (saving a checkpoint)…`,
        cancellable: true,
      },
      (_p, token) =>
        gracefulStop(
          { ...target, pid },
          { stopWaiting: new Promise<void>((r) => token.onCancellationRequested(() => r())) },
        ),
    );
  }
}
