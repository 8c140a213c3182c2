// Commands that launch engine jobs (all behind the trust check in JobRunner).
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { EngineGate } from '../engine/installer';
import type { JobRunner } from '../jobs/jobRunner';
import type { SlurmJobs } from '../jobs/slurmJobs';
import {
  demoArgs,
  runExperimentArgs,
  UPCYCLE_METHODS,
  type UpcycleMethod,
  upcycleArgs,
} from '../jobs/taskArgs';
import type { RunStore } from '../runs/runStore';
import { launcherKind, runsDirectories } from '../settings';
import { requireTrust } from '../trust';
import { runIdsFrom } from './commandArgs';
import { log, why } from '../util/log';

export interface JobCommandDeps {
  context: vscode.ExtensionContext;
  runner: JobRunner;
  gate: EngineGate;
  store: RunStore;
  slurm: SlurmJobs;
}

function folderOrWarn(): vscode.WorkspaceFolder | undefined {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder)
    void vscode.window.showWarningMessage('MoE Lab: open a folder first; runs are written under it.');
  return folder;
}

export function registerJobCommands(d: JobCommandDeps): vscode.Disposable[] {
  const { runner, store } = d;
  const refreshWhenDone = (started: { exit: Promise<number | undefined> } | undefined) => {
    void started?.exit.then(() => store.refresh());
  };

  return [
    vscode.commands.registerCommand('moelab.runDemo', async () => {
      const folder = folderOrWarn();
      if (!folder) return;
      const runsDir = runsDirectories(folder)[0] ?? path.join(folder.uri.fsPath, 'runs');
      const started = await runner.runEngine('MoE Lab demo', demoArgs(runsDir, folder.uri.fsPath), folder);
      if (started) void vscode.commands.executeCommand('moelab.runs.focus');
      refreshWhenDone(started);
    }),

    vscode.commands.registerCommand('moelab.runExperiment', async (arg?: vscode.Uri) => {
      let uri = arg instanceof vscode.Uri ? arg : undefined;
      const active = vscode.window.activeTextEditor?.document;
      if (!uri && active?.fileName.endsWith('.moelab.json')) uri = active.uri;
      if (!uri) {
        const files = await vscode.workspace.findFiles('**/*.moelab.json', '**/node_modules/**', 200);
        if (!files.length) {
          const pick = await vscode.window.showInformationMessage(
            'MoE Lab: no *.moelab.json experiment in this workspace.',
            'New experiment',
          );
          if (pick) void vscode.commands.executeCommand('moelab.newExperiment');
          return;
        }
        const pick = await vscode.window.showQuickPick(
          files.map((f) => ({ label: vscode.workspace.asRelativePath(f), uri: f })),
          { title: 'MoE Lab: run which experiment?' },
        );
        uri = pick?.uri;
      }
      if (!uri) return;
      const doc = vscode.workspace.textDocuments.find((t) => t.uri.toString() === uri.toString());
      if (doc?.isDirty) await doc.save();
      const folder = vscode.workspace.getWorkspaceFolder(uri) ?? vscode.workspace.workspaceFolders?.[0];
      // With the slurm launcher an experiment becomes a batch job whose script is shown before submission.
      if (launcherKind(folder) === 'slurm') {
        await d.slurm.generateScript(uri);
        return;
      }
      const base = folder?.uri.fsPath ?? path.dirname(uri.fsPath);
      refreshWhenDone(
        await runner.runEngine(
          `MoE Lab: run ${path.basename(uri.fsPath)}`,
          runExperimentArgs(uri.fsPath, base),
          folder,
        ),
      );
    }),

    vscode.commands.registerCommand('moelab.newExperiment', async () => {
      const folder = folderOrWarn();
      if (!folder) return;
      const name = await vscode.window.showInputBox({
        title: 'MoE Lab: new experiment',
        prompt: 'Name (the file becomes <name>.moelab.json)',
        value: 'my-experiment',
        validateInput: (v) => (/^[\w.-]+$/.test(v) ? undefined : 'Letters, digits, ".", "_" and "-" only'),
      });
      if (!name) return;
      const file = path.join(folder.uri.fsPath, `${name}.moelab.json`);
      try {
        await fsp.access(file);
      } catch {
        await fsp.writeFile(
          file,
          JSON.stringify(await experimentTemplate(d.context.extensionPath, name), null, 2) + '\n',
          { flag: 'wx' },
        );
      }
      await vscode.window.showTextDocument(vscode.Uri.file(file));
    }),

    vscode.commands.registerCommand('moelab.upcycle', async () => {
      if (!requireTrust('Upcycling')) return;
      const folder = folderOrWarn();
      if (!folder) return;
      const method = await vscode.window.showQuickPick(
        UPCYCLE_METHODS.map((m) => ({ label: m, description: METHOD_HELP[m] })),
        { title: 'MoE Lab: upcycle — method' },
      );
      if (!method) return;
      const pickDir = async (title: string, many = false) =>
        vscode.window.showOpenDialog({
          title,
          canSelectFolders: true,
          canSelectFiles: false,
          canSelectMany: many,
          defaultUri: folder.uri,
        });
      const seed = await pickDir('Seed checkpoint (dense, HF layout)');
      if (!seed?.[0]) return;
      const m = method.label as UpcycleMethod;
      const experts =
        m === 'sparse' ? [] : ((await pickDir('Expert checkpoints (one folder per expert)', true)) ?? []);
      if (m !== 'sparse' && experts.length === 0) return;
      const out = await vscode.window.showSaveDialog({
        title: 'Output folder for the MoE checkpoint',
        defaultUri: vscode.Uri.joinPath(folder.uri, `${m}-moe`),
      });
      if (!out) return;
      const topK = await vscode.window.showInputBox({
        title: 'Top-k (FFN)',
        value: '2',
        validateInput: (v) => (/^\d+$/.test(v) ? undefined : 'An integer'),
      });
      if (topK === undefined) return;
      let numExperts: number | undefined;
      if (m === 'sparse') {
        const n = await vscode.window.showInputBox({
          title: 'Number of experts',
          value: '4',
          validateInput: (v) => (/^\d+$/.test(v) ? undefined : 'An integer'),
        });
        if (n === undefined) return;
        numExperts = Number(n);
      }
      const args = upcycleArgs(
        {
          method: m,
          seed: seed[0].fsPath,
          experts: experts.map((e) => e.fsPath),
          out: out.fsPath,
          topK: Number(topK),
          numExperts,
        },
        folder.uri.fsPath,
      );
      await runner.runEngine(`MoE Lab: upcycle (${m})`, args, folder);
    }),

    vscode.commands.registerCommand('moelab.installEngine', async () => {
      if (!requireTrust('Installing the engine')) return;
      await d.gate.install();
    }),

    vscode.commands.registerCommand('moelab.stopRun', async (arg?: unknown, selection?: unknown) => {
      const [id] = runIdsFrom(arg, selection);
      const run = id ? d.slurm.findRun(id) : undefined;
      // A Slurm job runs on a compute node: scancel (via the engine), not a signal to a local pid.
      if (run && (await d.slurm.stopsViaSlurm(run))) await d.slurm.cancel(run);
      else await runner.stopRun(run);
    }),
  ];
}

const METHOD_HELP: Record<UpcycleMethod, string> = {
  sparse: 'N copies of one seed FFN, new router',
  btx: 'Branch-Train-MiX: one FFN expert per domain model',
  'bam-ekv': 'BAM: FFN + attention experts, each with its own KV',
  'bam-skv': 'BAM: FFN + attention experts, shared KV',
  upit: 'experts from intermediate checkpoints, genetic merging',
};

/** From the engine's schema: its first example, else every top-level default; else a skeleton. */
async function experimentTemplate(extensionPath: string, name: string): Promise<Record<string, unknown>> {
  try {
    const schema = JSON.parse(
      await fsp.readFile(
        path.join(extensionPath, 'engine', 'moelab', 'schema', 'experiment.schema.json'),
        'utf8',
      ),
    );
    const example = Array.isArray(schema.examples) ? schema.examples[0] : undefined;
    if (example && typeof example === 'object') return { ...example, name };
    const props: Record<string, { default?: unknown }> = schema.properties ?? {};
    const defaults = Object.fromEntries(
      Object.entries(props).flatMap(([k, v]) => (v && 'default' in v ? [[k, v.default]] : [])),
    );
    if (Object.keys(defaults).length) return { ...defaults, name };
  } catch (e) {
    log.debug(`new experiment: no template from the schema, an empty skeleton instead: ${why(e)}`);
  }
  return { name, stages: [] };
}
