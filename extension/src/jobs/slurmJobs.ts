// Slurm from the extension: "Submit to Slurm…" (the engine writes the sbatch script, the user reads
// and edits it, then submits it), job state in the Runs view, cancel and log of Slurm runs.
// Every process is `moelab slurm ...` with an argument array (slurmArgs.ts): the engine is the one
// place that knows how a job script looks.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { RunInfo } from '../runs/model';
import type { RunStore } from '../runs/runStore';
import { runsDirectories, slurmSettings } from '../settings';
import { requireTrust } from '../trust';
import type { JobRunner } from './jobRunner';
import {
  runDirOfScript,
  runsRootOf,
  scriptPathFor,
  slurmCancelArgs,
  type SlurmJobState,
  slurmLogArgs,
  slurmRunStatus,
  slurmScriptArgs,
  slurmSubmitScriptArgs,
} from './slurmArgs';
import { fetchSlurmStatus, hasRecordsWithoutRun, SlurmPoller } from './slurmPoller';
import { log, why } from '../util/log';

const SUBMIT = 'Submit';

export class SlurmJobs implements vscode.Disposable {
  private readonly poller: SlurmPoller;
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when the job states changed (the Runs view redraws). */
  readonly onDidChange = this.changed.event;
  private byDir = new Map<string, SlurmJobState>();
  /** Runs directories of scripts submitted from this window that may lie outside moelab.runsDirectories. */
  private readonly extraRoots = new Set<string>();
  private checkedRecords = false;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly runner: JobRunner,
    private readonly store: RunStore,
  ) {
    this.poller = new SlurmPoller({
      fetch: () => this.fetch(),
      trusted: () => vscode.workspace.isTrusted,
      onUpdate: (states) => {
        this.byDir = new Map(states.filter((s) => s.runDir).map((s) => [s.runDir as string, s]));
        this.changed.fire();
        void this.store.refresh(); // the trainer rewrites run.json when the job starts or ends
      },
    });
    this.disposables.push(
      this.changed,
      store.onDidChangeRuns(() => void this.kickIfPending()),
      vscode.workspace.onDidGrantWorkspaceTrust(() => void this.kickIfPending()),
    );
  }

  dispose(): void {
    this.poller.dispose();
    for (const d of this.disposables) d.dispose();
  }

  private async fetch(): Promise<SlurmJobState[]> {
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder || !vscode.workspace.isTrusted) return [];
    const { python } = await this.runner.locator.interpreter(folder);
    return fetchSlurmStatus(python, [...runsDirectories(), ...this.extraRoots], folder.uri.fsPath);
  }

  /**
   * Polls when a run in the view is queued or running and was submitted to Slurm (has slurm.json);
   * the first time also when a job record has no run.json yet (submitted before this window opened).
   */
  async kickIfPending(): Promise<void> {
    if (!vscode.workspace.isTrusted || this.poller.polling) return;
    for (const run of this.store.list()) {
      if ((run.status === 'queued' || run.status === 'running') && (await isSlurmRunDir(run.dir))) {
        this.poller.kick();
        return;
      }
    }
    if (this.checkedRecords) return;
    this.checkedRecords = true;
    for (const root of runsDirectories()) {
      if (await hasRecordsWithoutRun(root)) {
        this.poller.kick();
        return;
      }
    }
  }

  stateFor(runDir: string): SlurmJobState | undefined {
    return this.byDir.get(path.resolve(runDir));
  }

  /**
   * Jobs that are queued or running with no run.json yet (a script submitted with --script, an
   * experiment's job record under .slurm/): shown in the Runs view so a submission is visible at once.
   */
  pendingWithoutRun(): RunInfo[] {
    const known = new Set(this.store.list().map((r) => path.resolve(r.dir)));
    const out: RunInfo[] = [];
    for (const s of this.byDir.values()) {
      if (!s.active || !s.runDir || known.has(s.runDir)) continue;
      const experiment = path.basename(path.dirname(s.runDir)) === '.slurm';
      out.push({
        id: path.basename(s.runDir),
        dir: s.runDir,
        status: slurmRunStatus(s),
        stage: experiment ? 'experiment' : 'slurm',
        group: experiment ? path.basename(s.runDir) : path.basename(path.dirname(s.runDir)),
        slurmOnly: true,
      });
    }
    return out;
  }

  /** A run of the store, or one of pendingWithoutRun(). */
  findRun(id: string): RunInfo | undefined {
    return this.store.get(id) ?? this.pendingWithoutRun().find((r) => r.id === id);
  }

  /** Whether Open Run Log should go through `moelab slurm log` for this run. */
  async isSlurmRun(run: RunInfo): Promise<boolean> {
    return this.stateFor(run.dir) !== undefined || (await isSlurmRunDir(run.dir));
  }

  /**
   * Whether Stop Run means scancel: Slurm still has the job, or (no answer yet) the run has a job
   * record. A run once submitted and now rerun locally is stopped like any local run.
   */
  async stopsViaSlurm(run: RunInfo): Promise<boolean> {
    const state = this.stateFor(run.dir);
    return state ? state.active : isSlurmRunDir(run.dir);
  }

  /** `moelab slurm script CONFIG --out FILE`, then open FILE for reading and editing. */
  async generateScript(config: vscode.Uri): Promise<void> {
    if (!requireTrust('Writing a Slurm script')) return;
    const folder = vscode.workspace.getWorkspaceFolder(config) ?? vscode.workspace.workspaceFolders?.[0];
    const base = folder?.uri.fsPath ?? path.dirname(config.fsPath);
    const doc = vscode.workspace.textDocuments.find((t) => t.uri.toString() === config.toString());
    if (doc?.isDirty) await doc.save();
    const out = scriptPathFor(config.fsPath);
    if (await exists(out)) {
      const pick = await vscode.window.showWarningMessage(
        `${path.basename(out)} exists (it may hold your edits).`,
        { modal: true },
        'Regenerate',
        'Open Existing',
      );
      if (!pick) return;
      if (pick === 'Open Existing') {
        await this.showScript(vscode.Uri.file(out));
        return;
      }
    }
    const args = slurmScriptArgs(config.fsPath, out, slurmSettings(folder), base);
    const started = await this.runner.runEngine(
      `MoE Lab: Slurm script for ${path.basename(config.fsPath)}`,
      args,
      folder,
    );
    if (!started) return;
    const code = await started.exit;
    if (code !== 0 || !(await exists(out))) {
      void vscode.window.showErrorMessage(
        `MoE Lab: moelab slurm script failed (exit ${code ?? '?'}); see the task terminal.`,
      );
      return;
    }
    await this.showScript(vscode.Uri.file(out));
  }

  private async showScript(uri: vscode.Uri): Promise<void> {
    await vscode.window.showTextDocument(uri, { preview: false });
    const pick = await vscode.window.showInformationMessage(
      `MoE Lab: review ${path.basename(uri.fsPath)} (edit it if needed), then submit it with sbatch.`,
      SUBMIT,
    );
    if (pick === SUBMIT) await this.submitScript(uri);
  }

  /** `moelab slurm submit --script FILE` as a task; then polls until the job is done. */
  async submitScript(script: vscode.Uri): Promise<void> {
    if (!requireTrust('Submitting to Slurm')) return;
    const doc = vscode.workspace.textDocuments.find((t) => t.uri.toString() === script.toString());
    if (doc?.isDirty) await doc.save();
    const folder = vscode.workspace.getWorkspaceFolder(script) ?? vscode.workspace.workspaceFolders?.[0];
    const base = folder?.uri.fsPath ?? path.dirname(script.fsPath);
    const text =
      doc?.getText() ??
      (await fsp.readFile(script.fsPath, 'utf8').catch((e: unknown) => {
        log.debug(`sbatch script ${script.fsPath} cannot be read: ${why(e)}`);
        return '';
      }));
    const runDir = runDirOfScript(text);
    if (runDir) this.extraRoots.add(runsRootOf(path.resolve(base, runDir)));
    const started = await this.runner.runEngine(
      `MoE Lab: submit ${path.basename(script.fsPath)}`,
      slurmSubmitScriptArgs(script.fsPath, base),
      folder,
    );
    if (!started) return;
    const code = await started.exit;
    if (code === 0) {
      this.poller.kick();
      void vscode.commands.executeCommand('moelab.runs.focus');
    }
  }

  /** `moelab slurm cancel RUN_DIR` as a task (scancel; the trainer checkpoints on the SIGTERM). */
  async cancel(run: RunInfo): Promise<void> {
    const job = this.stateFor(run.dir);
    const ok = await vscode.window.showWarningMessage(
      `Cancel Slurm job ${job ? job.jobId + ' ' : ''}of run ${run.id}? A running job checkpoints first.`,
      { modal: true },
      'Cancel Job',
    );
    if (!ok) return;
    const folder = vscode.workspace.workspaceFolders?.[0];
    const started = await this.runner.runEngine(
      `MoE Lab: cancel ${run.id}`,
      slurmCancelArgs(run.dir, folder?.uri.fsPath ?? run.dir),
      folder,
    );
    if (started) void started.exit.then(() => this.poller.kick());
  }

  /** `moelab slurm log RUN_DIR --follow` in a task terminal; it ends when the job ends. */
  async followLog(run: RunInfo): Promise<void> {
    const folder = vscode.workspace.workspaceFolders?.[0];
    await this.runner.runEngine(
      `MoE Lab: log ${run.id}`,
      slurmLogArgs(run.dir, folder?.uri.fsPath ?? run.dir),
      folder,
    );
  }
}

async function exists(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    () => true,
    () => false,
  );
}

function isSlurmRunDir(dir: string): Promise<boolean> {
  return exists(path.join(dir, 'slurm.json'));
}

/** Commands of the Slurm flow; Stop Run and Open Run Log reach SlurmJobs from their own handlers. */
export function registerSlurmCommands(slurm: SlurmJobs): vscode.Disposable[] {
  const pickFile = async (
    arg: unknown,
    title: string,
    test: (f: string) => boolean,
    glob: string,
  ): Promise<vscode.Uri | undefined> => {
    if (arg instanceof vscode.Uri) return arg;
    const active = vscode.window.activeTextEditor?.document;
    if (active && active.uri.scheme === 'file' && test(active.fileName)) return active.uri;
    const files = await vscode.workspace.findFiles(glob, '{**/node_modules/**,**/runs/**,**/.venv/**}', 500);
    const pick = await vscode.window.showQuickPick(
      files.map((f) => ({ label: vscode.workspace.asRelativePath(f), uri: f })),
      { title },
    );
    return pick?.uri;
  };
  return [
    vscode.commands.registerCommand('moelab.submitToSlurm', async (arg?: unknown) => {
      const uri = await pickFile(
        arg,
        'MoE Lab: submit which train config or experiment to Slurm?',
        (f) => f.endsWith('.json'),
        '**/*.json',
      );
      if (uri) await slurm.generateScript(uri);
    }),
    vscode.commands.registerCommand('moelab.submitSlurmScript', async (arg?: unknown) => {
      const uri = await pickFile(
        arg,
        'MoE Lab: submit which sbatch script?',
        (f) => f.endsWith('.sbatch'),
        '**/*.sbatch',
      );
      if (uri) await slurm.submitScript(uri);
    }),
  ];
}
