// Commands that only look at things: panels, compare, refresh, logs. Allowed in Restricted Mode.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { CheckpointsTreeProvider } from '../checkpoints/checkpointsTree';
import type { SlurmJobs } from '../jobs/slurmJobs';
import { runSpec } from '../panels/analysisCache';
import type { PanelsApi } from '../panels/register';
import type { RunStore } from '../runs/runStore';
import { shownStatus } from '../runs/runStore';
import { runIdsFrom } from './commandArgs';
import { log, why } from '../util/log';

export interface ViewCommandDeps {
  store: RunStore;
  panels: PanelsApi;
  checkpoints: CheckpointsTreeProvider;
  runsView: vscode.TreeView<unknown>;
  slurm: SlurmJobs;
}

const LOG_NAMES = ['train.log', 'log.txt', 'stdout.log', 'run.log', 'output.log', 'stderr.log'];

async function pickRuns(store: RunStore, title: string, many: boolean): Promise<string[] | undefined> {
  const items = store.list().map((r) => ({
    label: r.id,
    description: `${r.group ?? ''} · ${r.stage ?? ''} · ${shownStatus(r)}`,
    id: r.id,
  }));
  if (!items.length) {
    void vscode.window.showInformationMessage('MoE Lab: no runs yet. Run the demo or an experiment first.');
    return undefined;
  }
  if (many) return (await vscode.window.showQuickPick(items, { title, canPickMany: true }))?.map((i) => i.id);
  const one = await vscode.window.showQuickPick(items, { title });
  return one ? [one.id] : undefined;
}

export function registerViewCommands(d: ViewCommandDeps): vscode.Disposable[] {
  const { store, panels } = d;
  const selectedRuns = (arg: unknown, selection: unknown) => {
    const ids = runIdsFrom(arg, selection);
    return ids.length ? ids : runIdsFrom(undefined, [...d.runsView.selection]);
  };
  return [
    vscode.commands.registerCommand('moelab.openDashboard', (arg?: unknown, selection?: unknown) => {
      const ids = runIdsFrom(arg, selection);
      panels.openDashboard(ids.length ? ids : undefined);
    }),
    vscode.commands.registerCommand('moelab.openRouterPanel', (arg?: unknown, selection?: unknown) => {
      const ids = runIdsFrom(arg, selection);
      panels.openRouterPanel(ids.length ? ids : undefined);
    }),
    vscode.commands.registerCommand('moelab.analyzeWeights', async (arg?: unknown, selection?: unknown) => {
      const [id] = selectedRuns(arg, selection).length
        ? selectedRuns(arg, selection)
        : ((await pickRuns(store, 'MoE Lab: analyze the weights of which run?', false)) ?? []);
      const run = id ? store.get(id) : undefined;
      if (run) panels.openRouterPanel([run.id], { spec: await runSpec(run), show: true });
    }),
    vscode.commands.registerCommand('moelab.compareRuns', async (arg?: unknown, selection?: unknown) => {
      let ids = selectedRuns(arg, selection);
      if (ids.length < 2) ids = (await pickRuns(store, 'MoE Lab: compare which runs?', true)) ?? [];
      if (ids.length) panels.openDashboard(ids);
    }),
    vscode.commands.registerCommand('moelab.refresh', async () => {
      d.checkpoints.clearCache();
      await store.refresh();
    }),
    vscode.commands.registerCommand('moelab.openRunLog', async (arg?: unknown, selection?: unknown) => {
      const [id] = runIdsFrom(arg, selection).length
        ? runIdsFrom(arg, selection)
        : ((await pickRuns(store, 'MoE Lab: log of which run?', false)) ?? []);
      const run = id ? d.slurm.findRun(id) : undefined;
      if (!run) return;
      if (await d.slurm.isSlurmRun(run)) {
        // Trusted: `moelab slurm log --follow` in a terminal. Restricted Mode starts no process,
        // so the log file named in slurm.json is opened instead.
        if (vscode.workspace.isTrusted) {
          await d.slurm.followLog(run);
          return;
        }
        const log = d.slurm.stateFor(run.dir)?.log ?? (await recordedLog(run.dir));
        if (log) {
          await vscode.window.showTextDocument(vscode.Uri.file(log), { preview: true });
          return;
        }
      }
      // The engine's console output lives in the task terminal; a log file is used when the engine writes one.
      let target = path.join(run.dir, 'run.json');
      for (const name of LOG_NAMES) {
        try {
          await fsp.access(path.join(run.dir, name));
          target = path.join(run.dir, name);
          break;
        } catch {
          // next candidate
        }
      }
      await vscode.window.showTextDocument(vscode.Uri.file(target), { preview: true });
    }),
    vscode.commands.registerCommand('moelab.revealRunFolder', (arg?: unknown) => {
      const [id] = runIdsFrom(arg);
      const run = id ? store.get(id) : undefined;
      if (run) void vscode.commands.executeCommand('revealFileInOS', vscode.Uri.file(run.dir));
    }),
  ];
}

/** The log path in runs/<id>/slurm.json (written by `moelab slurm submit`), if readable. */
async function recordedLog(runDir: string): Promise<string | undefined> {
  try {
    const rec: unknown = JSON.parse(await fsp.readFile(path.join(runDir, 'slurm.json'), 'utf8'));
    const log = typeof rec === 'object' && rec !== null ? (rec as { log?: unknown }).log : undefined;
    if (typeof log === 'string' && log) {
      await fsp.access(log);
      return log;
    }
  } catch (e) {
    log.trace(`no Slurm log for ${runDir} yet: ${why(e)}`);
  }
  return undefined;
}
