// Commands on checkpoints: compare, export, plan training memory, copy path, open in the router panel.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { loadCheckpoint } from '../checkpoints/checkpointLoader';
import { architectureMismatch, diffTensors, renderDiff } from '../checkpoints/checkpointDiff';
import type { CheckpointNode, CheckpointsTreeProvider } from '../checkpoints/checkpointsTree';
import type { DiffDocumentProvider } from '../checkpoints/diffDocument';
import { hasSubcommand } from '../engine/interpreter';
import type { JobRunner } from '../jobs/jobRunner';
import { type ExportFormat, exportArgs, parseSetup, type PlanParallel, planArgs } from '../jobs/taskArgs';
import { checkpointSpec, pairSpec, runSpec } from '../panels/analysisCache';
import type { PanelsApi } from '../panels/register';
import type { RunStore } from '../runs/runStore';
import { requireTrust } from '../trust';
import type { CheckpointRef } from '../checkpoints/checkpointLoader';
import { checkpointRefsFrom, lineageRunId } from './commandArgs';

export interface CheckpointCommandDeps {
  runner: JobRunner;
  panels: PanelsApi;
  tree: CheckpointsTreeProvider;
  diffDocs: DiffDocumentProvider;
  /** Finds the run folder of a run group node (its whole run is analyzed). */
  store?: RunStore;
  /** The Checkpoints view, where "Reveal in Checkpoints View" selects a checkpoint. */
  view?: vscode.TreeView<CheckpointNode>;
}

async function pickCheckpoint(
  tree: CheckpointsTreeProvider,
  title: string,
  exclude: string[] = [],
): Promise<CheckpointRef | undefined> {
  if (!tree.known().length) await tree.getChildren();
  const items = tree
    .known()
    .filter((r) => !exclude.includes(r.dir))
    .map((r) => ({
      label: r.runId ? `${r.runId}/${r.label}` : r.label,
      description: r.isLatest ? 'latest' : '',
      ref: r,
    }));
  if (!items.length) {
    void vscode.window.showInformationMessage('MoE Lab: no other checkpoint found.');
    return undefined;
  }
  return (await vscode.window.showQuickPick(items, { title }))?.ref;
}

const refLabel = (r: CheckpointRef) => (r.runId ? `${r.runId}/${r.label}` : r.label);

function isRunGroupNode(v: unknown): v is { kind: 'runGroup'; runId: string } {
  return (
    typeof v === 'object' &&
    v !== null &&
    (v as { kind?: unknown }).kind === 'runGroup' &&
    typeof (v as { runId?: unknown }).runId === 'string'
  );
}

export function registerCheckpointCommands(d: CheckpointCommandDeps): vscode.Disposable[] {
  const { tree, runner } = d;
  const oneRef = async (arg: unknown, title: string) =>
    checkpointRefsFrom(arg)[0] ?? (await pickCheckpoint(tree, title));

  return [
    vscode.commands.registerCommand('moelab.copyCheckpointPath', async (arg?: unknown) => {
      const ref = await oneRef(arg, 'MoE Lab: copy the path of which checkpoint?');
      if (ref) await vscode.env.clipboard.writeText(ref.dir);
    }),

    vscode.commands.registerCommand('moelab.openCheckpointInRouterPanel', async (arg?: unknown) => {
      // A run group (or a Lineage run) stands for its run: drift over all its checkpoints.
      const runId = isRunGroupNode(arg) ? arg.runId : lineageRunId(arg);
      const run = runId ? d.store?.get(runId) : undefined;
      if (run) {
        d.panels.openRouterPanel([run.id], { spec: await runSpec(run), show: true });
        return;
      }
      const ref = await oneRef(arg, 'MoE Lab: router panel for which checkpoint?');
      if (!ref) return;
      d.panels.openRouterPanel(ref.runId ? [ref.runId] : [], {
        spec: checkpointSpec(ref.dir, refLabel(ref), ref.runId),
        show: true,
      });
    }),

    vscode.commands.registerCommand('moelab.revealCheckpoint', async (arg?: unknown) => {
      // From the Lineage view: a run's newest checkpoint (an upcycle's MoE), or a checkpoint it mixed.
      const runId = lineageRunId(arg);
      const dir = runId ? undefined : checkpointRefsFrom(arg)[0]?.dir;
      const node = runId || dir ? await tree.nodeFor({ runId, dir }) : undefined;
      if (!node || !d.view) {
        void vscode.window.showInformationMessage(
          `MoE Lab: ${runId ? `run ${runId} has no checkpoint` : `no checkpoint at ${dir ?? '?'}`} (yet, or no more).`,
        );
        return;
      }
      await showView(d.view, tree);
      await d.view.reveal(node, { select: true, focus: true, expand: true });
    }),

    vscode.commands.registerCommand('moelab.exportCheckpoint', async (arg?: unknown) => {
      if (!requireTrust('Exporting a checkpoint')) return;
      const ref = await oneRef(arg, 'MoE Lab: export which checkpoint?');
      if (!ref) return;
      const fmt = await vscode.window.showQuickPick(
        [
          {
            label: 'onnx' as ExportFormat,
            description: 'ONNX with router outputs (for the routing inspector)',
          },
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
      await runner.runEngine(
        `MoE Lab: export ${refLabel(ref)} (${fmt.label})`,
        exportArgs(ref.dir, fmt.label, out.fsPath, path.dirname(ref.dir)),
      );
    }),

    vscode.commands.registerCommand('moelab.planTrainingMemory', async (arg?: unknown) => {
      const ref = await oneRef(arg, 'MoE Lab: plan the training memory of which checkpoint?');
      if (!ref) return;
      const setup = await pickGpuSetup();
      if (!setup) return;
      const seq = await vscode.window.showInputBox({
        title: 'MoE Lab: tokens per sequence',
        value: '4096',
        validateInput: (v) => (/^[1-9]\d*$/.test(v.trim()) ? undefined : 'a positive integer'),
      });
      if (!seq) return;
      const parallel = await vscode.window.showQuickPick(
        [
          { label: 'fsdp' as PlanParallel, description: 'every parameter sharded over the GPUs (FSDP2)' },
          {
            label: 'fsdp+ep' as PlanParallel,
            description: 'FFN experts placed on the GPUs, the rest sharded (expert parallelism)',
          },
        ],
        { title: 'MoE Lab: parallelism' },
      );
      if (!parallel) return;
      await runner.runEngine(
        `MoE Lab: plan ${refLabel(ref)} on ${setup.gpus} × ${setup.memGiB} GiB`,
        planArgs(
          ref.dir,
          setup.gpus,
          setup.memGiB,
          parallel.label,
          Number(seq.trim()),
          path.dirname(ref.dir),
        ),
      );
    }),

    vscode.commands.registerCommand('moelab.compareCheckpoints', (arg?: unknown, selection?: unknown) =>
      compare(arg, selection),
    ),
    vscode.commands.registerCommand('moelab.compareCheckpointWith', (arg?: unknown, selection?: unknown) =>
      compare(arg, selection),
    ),
  ];

  /**
   * Two checkpoints of one architecture: the tensors that differ and the similarity view, in the
   * router panel's Weights tab (engine tasks). Other architectures: say why, offer the header diff.
   * Without the engine (Restricted Mode, not installed): the header diff.
   */
  async function compare(arg: unknown, selection: unknown): Promise<void> {
    const refs = checkpointRefsFrom(arg, selection);
    const a = refs[0] ?? (await pickCheckpoint(tree, 'MoE Lab: compare — first checkpoint'));
    if (!a) return;
    const b = refs[1] ?? (await pickCheckpoint(tree, `MoE Lab: compare ${refLabel(a)} with…`, [a.dir]));
    if (!b) return;
    const [la, lb] = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: 'MoE Lab: reading checkpoint headers' },
      () => Promise.all([loadCheckpoint(a.dir), loadCheckpoint(b.dir)]),
    );
    const errors = [...la.errors.map((e) => `A: ${e}`), ...lb.errors.map((e) => `B: ${e}`)];
    const diff = diffTensors(la.tensors, lb.tensors);
    const showHeaderDiff = () =>
      d.diffDocs.show(`${refLabel(a)} vs ${refLabel(b)}`, renderDiff(a.dir, b.dir, diff, errors));
    if (errors.length) {
      await showHeaderDiff();
      return;
    }
    const mismatch = architectureMismatch(refLabel(a), refLabel(b), diff);
    if (mismatch) {
      const pick = await vscode.window.showWarningMessage(`MoE Lab: ${mismatch}`, 'Show Header Diff');
      if (pick) await showHeaderDiff();
      return;
    }
    if (!(await engineCanAnalyze(runner))) {
      await showHeaderDiff();
      return;
    }
    const spec = pairSpec(
      { dir: a.dir, label: refLabel(a), runId: a.runId },
      { dir: b.dir, label: refLabel(b), runId: b.runId },
    );
    d.panels.openRouterPanel(spec.runIds, { spec, show: true });
  }
}

/** The papers' machines, or any other: GPUs per job and memory per GPU (GiB). */
async function pickGpuSetup(): Promise<{ gpus: number; memGiB: number } | undefined> {
  const presets = [
    { label: '8 × 80 GB', description: 'one node of A100/H100 80 GB', gpus: 8, memGiB: 80 },
    { label: '8 × 141 GB', description: 'one node of H200', gpus: 8, memGiB: 141 },
    { label: '1 × 24 GB', description: 'one workstation GPU', gpus: 1, memGiB: 24 },
    { label: 'Other…', description: 'type GPUs × GiB', gpus: 0, memGiB: 0 },
  ];
  const pick = await vscode.window.showQuickPick(presets, { title: 'MoE Lab: GPUs to plan for' });
  if (!pick) return undefined;
  if (pick.gpus) return pick;
  const typed = await vscode.window.showInputBox({
    title: 'MoE Lab: GPUs × memory per GPU (GiB)',
    placeHolder: '4 × 48',
    validateInput: (v) => (parseSetup(v) ? undefined : 'e.g. 4 × 48 (or 4x48): GPUs, then GiB per GPU'),
  });
  return typed ? parseSetup(typed) : undefined;
}

/**
 * Opens the Checkpoints view and lets it list its top level before a reveal: a reveal into a view
 * that has not listed it yet fetches the same rows twice at once, and VS Code rejects the second
 * ("Element with id … is already registered").
 */
async function showView(view: vscode.TreeView<CheckpointNode>, tree: CheckpointsTreeProvider): Promise<void> {
  if (!view.visible) {
    const shown = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        sub.dispose();
        resolve();
      }, 3000);
      const sub = view.onDidChangeVisibility((e) => {
        if (!e.visible) return;
        clearTimeout(timer);
        sub.dispose();
        resolve();
      });
    });
    await vscode.commands.executeCommand('moelab.checkpoints.focus');
    await shown;
    // The view asks for its rows right after it shows.
    await new Promise((r) => setTimeout(r, 200));
  }
  await tree.idle();
}

/** The engine's analysis is richer (weights, routers); the header diff is the fallback. */
async function engineCanAnalyze(runner: JobRunner): Promise<boolean> {
  if (!vscode.workspace.isTrusted) return false;
  const { python } = await runner.locator.interpreter();
  if ((await runner.locator.probe(python)).state !== 'ok') return false;
  return hasSubcommand(python, 'analyze', vscode.workspace.workspaceFolders?.[0]?.uri.fsPath);
}
