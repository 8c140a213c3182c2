// Commands on checkpoints: compare, export, copy path, open in the router panel.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { loadCheckpoint } from '../checkpoints/checkpointLoader';
import { diffTensors, renderDiff } from '../checkpoints/checkpointDiff';
import type { CheckpointsTreeProvider } from '../checkpoints/checkpointsTree';
import type { DiffDocumentProvider } from '../checkpoints/diffDocument';
import { hasSubcommand } from '../engine/interpreter';
import type { JobRunner } from '../jobs/jobRunner';
import { analyzeArgs, type ExportFormat, exportArgs } from '../jobs/taskArgs';
import type { PanelsApi } from '../panels/register';
import { requireTrust } from '../trust';
import type { CheckpointRef } from '../checkpoints/checkpointLoader';
import { checkpointRefsFrom } from './commandArgs';

export interface CheckpointCommandDeps {
  runner: JobRunner;
  panels: PanelsApi;
  tree: CheckpointsTreeProvider;
  diffDocs: DiffDocumentProvider;
}

async function pickCheckpoint(tree: CheckpointsTreeProvider, title: string, exclude: string[] = []): Promise<CheckpointRef | undefined> {
  if (!tree.known().length) await tree.getChildren();
  const items = tree
    .known()
    .filter((r) => !exclude.includes(r.dir))
    .map((r) => ({ label: r.runId ? `${r.runId}/${r.label}` : r.label, description: r.isLatest ? 'latest' : '', ref: r }));
  if (!items.length) {
    void vscode.window.showInformationMessage('MoE Lab: no other checkpoint found.');
    return undefined;
  }
  return (await vscode.window.showQuickPick(items, { title }))?.ref;
}

const refLabel = (r: CheckpointRef) => (r.runId ? `${r.runId}/${r.label}` : r.label);

export function registerCheckpointCommands(d: CheckpointCommandDeps): vscode.Disposable[] {
  const { tree, runner } = d;
  const oneRef = async (arg: unknown, title: string) => checkpointRefsFrom(arg)[0] ?? (await pickCheckpoint(tree, title));

  return [
    vscode.commands.registerCommand('moelab.copyCheckpointPath', async (arg?: unknown) => {
      const ref = await oneRef(arg, 'MoE Lab: copy the path of which checkpoint?');
      if (ref) await vscode.env.clipboard.writeText(ref.dir);
    }),

    vscode.commands.registerCommand('moelab.openCheckpointInRouterPanel', async (arg?: unknown) => {
      const ref = await oneRef(arg, 'MoE Lab: router panel for which checkpoint?');
      if (!ref) return;
      if (ref.runId) d.panels.openRouterPanel([ref.runId]);
      else void vscode.window.showInformationMessage('MoE Lab: the router panel shows the routing logged by a run; this checkpoint is not inside a run folder.');
    }),

    vscode.commands.registerCommand('moelab.exportCheckpoint', async (arg?: unknown) => {
      if (!requireTrust('Exporting a checkpoint')) return;
      const ref = await oneRef(arg, 'MoE Lab: export which checkpoint?');
      if (!ref) return;
      const fmt = await vscode.window.showQuickPick(
        [
          { label: 'onnx' as ExportFormat, description: 'ONNX with router outputs (for the routing inspector)' },
          { label: 'hf' as ExportFormat, description: 'Hugging Face folder' },
        ],
        { title: 'MoE Lab: export format' },
      );
      if (!fmt) return;
      const out = await vscode.window.showSaveDialog({
        title: 'Export to folder',
        defaultUri: vscode.Uri.file(`${ref.dir}-${fmt.label}`),
      });
      if (!out) return;
      await runner.runEngine(`MoE Lab: export ${refLabel(ref)} (${fmt.label})`, exportArgs(ref.dir, fmt.label, out.fsPath, path.dirname(ref.dir)));
    }),

    vscode.commands.registerCommand('moelab.compareCheckpoints', async (arg?: unknown, selection?: unknown) => {
      const refs = checkpointRefsFrom(arg, selection);
      const a = refs[0] ?? (await pickCheckpoint(tree, 'MoE Lab: compare — first checkpoint'));
      if (!a) return;
      const b = refs[1] ?? (await pickCheckpoint(tree, `MoE Lab: compare ${refLabel(a)} with…`, [a.dir]));
      if (!b) return;
      if (await engineCanAnalyze(runner)) {
        const out = path.join(os.tmpdir(), `moelab-analyze-${Date.now()}.json`);
        const started = await runner.runEngine(`MoE Lab: analyze ${refLabel(a)} vs ${refLabel(b)}`, analyzeArgs(a.dir, b.dir, out, path.dirname(a.dir)));
        if (started && (await started.exit) === 0) {
          await vscode.window.showTextDocument(vscode.Uri.file(out), { preview: false });
          return;
        }
        if (started) return; // the task terminal shows why it failed
      }
      const [la, lb] = await Promise.all([loadCheckpoint(a.dir), loadCheckpoint(b.dir)]);
      const errors = [...la.errors.map((e) => `A: ${e}`), ...lb.errors.map((e) => `B: ${e}`)];
      await d.diffDocs.show(`${refLabel(a)} vs ${refLabel(b)}`, renderDiff(a.dir, b.dir, diffTensors(la.tensors, lb.tensors), errors));
    }),
  ];
}

/** The engine's analysis is richer (weights, routers); the header diff is the fallback. */
async function engineCanAnalyze(runner: JobRunner): Promise<boolean> {
  if (!vscode.workspace.isTrusted) return false;
  const { python } = await runner.locator.interpreter();
  if ((await runner.locator.probe(python)).state !== 'ok') return false;
  return hasSubcommand(python, 'analyze', vscode.workspace.workspaceFolders?.[0]?.uri.fsPath);
}
