// Wires the services together. Everything is created here and disposed via context.subscriptions.
import * as vscode from 'vscode';
import { CheckpointsTreeProvider } from './checkpoints/checkpointsTree';
import { DIFF_SCHEME, DiffDocumentProvider } from './checkpoints/diffDocument';
import { EXPERIMENT_SELECTOR, ExperimentCodeLensProvider, SBATCH_SELECTOR } from './codeLens';
import { registerCheckpointCommands } from './commands/checkpointCommands';
import { registerJobCommands } from './commands/jobCommands';
import { registerViewCommands } from './commands/viewCommands';
import { EngineEnvironments } from './engine/envSetup';
import { EngineGate } from './engine/installer';
import { EngineLocator } from './engine/locator';
import { registerInspector } from './inspector/register';
import { JobRunner, TASK_TYPE } from './jobs/jobRunner';
import { registerSlurmCommands, SlurmJobs } from './jobs/slurmJobs';
import { MoelabTaskProvider } from './jobs/taskProvider';
import { type PanelsApi, registerPanels } from './panels/register';
import { registerResults } from './results/register';
import { LineageTreeProvider } from './runs/lineageTree';
import type { RunStoreApi } from './runs/model';
import { registerRunNotifications } from './runs/runNotifications';
import { RunStore } from './runs/runStore';
import { RunsTreeProvider } from './runs/runsTree';
import { RunsWatcher } from './runs/runsWatcher';
import { runsDirectories } from './settings';
import { RunStatusBar } from './statusBar';
import { useLog } from './util/log';

/** What activate() returns: the e2e tests and other extensions reach the services through it. */
export interface MoelabApi {
  runStore: RunStoreApi;
  panels: PanelsApi;
  runEngineTask(name: string, args: string[]): Promise<number | undefined>;
}

export function activate(context: vscode.ExtensionContext): MoelabApi {
  const subs = context.subscriptions;
  // The one "MoE Lab" log: every service's failures and deliberate fallbacks (util/log.ts).
  const logChannel = vscode.window.createOutputChannel('MoE Lab', { log: true });
  subs.push(logChannel, useLog(logChannel));

  const store = new RunStore({ roots: () => runsDirectories() });
  subs.push(store);

  const locator = new EngineLocator();
  // pip's output, when MoE Lab sets up a Python for the engine, goes to the one MoE Lab log.
  const environments = new EngineEnvironments(locator, context.globalStorageUri.fsPath, logChannel);
  const gate = new EngineGate(locator, context.extensionPath, environments);
  const runner = new JobRunner(locator, gate);
  subs.push(
    locator,
    runner,
    runner.onDidEndJob(() => void store.refresh()),
  );

  const slurm = new SlurmJobs(runner, store);
  subs.push(slurm);

  const runsTree = new RunsTreeProvider(store, slurm);
  const runsView = vscode.window.createTreeView('moelab.runs', {
    treeDataProvider: runsTree,
    canSelectMany: true,
    showCollapseAll: true,
  });
  const checkpointsTree = new CheckpointsTreeProvider(store);
  const checkpointsView = vscode.window.createTreeView('moelab.checkpoints', {
    treeDataProvider: checkpointsTree,
    canSelectMany: true,
    showCollapseAll: true,
  });
  const lineageTree = new LineageTreeProvider(store);
  const lineageView = vscode.window.createTreeView('moelab.lineage', {
    treeDataProvider: lineageTree,
    showCollapseAll: true,
  });
  subs.push(runsTree, runsView, checkpointsTree, checkpointsView, lineageTree, lineageView);

  subs.push(
    new RunsWatcher((uri) => {
      store.schedule();
      // checkpoints/step-N/ of training runs, checkpoint/ of upcycle runs.
      if (/[\\/]checkpoints?([\\/]|$)/.test(uri.fsPath)) checkpointsTree.refresh();
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('moelab.runsDirectories')) void store.refresh();
    }),
    vscode.workspace.onDidChangeWorkspaceFolders(() => void store.refresh()),
    new RunStatusBar(store),
    registerRunNotifications(store),
  );

  const diffDocs = new DiffDocumentProvider();
  const codeLens = new ExperimentCodeLensProvider();
  subs.push(
    codeLens,
    vscode.workspace.registerTextDocumentContentProvider(DIFF_SCHEME, diffDocs),
    vscode.tasks.registerTaskProvider(TASK_TYPE, new MoelabTaskProvider(runner)),
    vscode.languages.registerCodeLensProvider(EXPERIMENT_SELECTOR, codeLens),
    vscode.languages.registerCodeLensProvider(SBATCH_SELECTOR, codeLens),
  );

  const panels = registerPanels(context, store, runner);
  const runEngineTask = (name: string, args: string[]) => runner.runEngineAndWait(name, args);
  registerInspector(context, { runEngineTask });

  subs.push(
    ...registerJobCommands({ context, runner, gate, store, slurm }),
    ...registerSlurmCommands(slurm),
    ...registerViewCommands({
      store,
      panels,
      checkpoints: checkpointsTree,
      runsView: runsView as vscode.TreeView<unknown>,
      slurm,
    }),
    ...registerCheckpointCommands({
      runner,
      panels,
      tree: checkpointsTree,
      diffDocs,
      store,
      view: checkpointsView,
    }),
    ...registerResults(context, store),
  );

  void store.refresh();
  return { runStore: store, panels, runEngineTask };
}

export function deactivate(): void {
  // Everything is disposed through context.subscriptions.
}
