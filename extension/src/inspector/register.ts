// "MoE Lab: Inspect Routing of Selection": pick a model (an ONNX export, or a checkpoint to
// export first), run the selection through it in the inspector worker, colour the tokens.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { requireTrust } from '../trust';
import type { CheckpointChoice, ModelChoice } from './discovery';
import { CLEAR_COMMAND, PICK_ROUTER_COMMAND, RoutingEditorView } from './editorView';
import { InspectorError } from './errors';
import { findModels, pickModel, pickRouter } from './picker';
import { defaultRouter } from './view';
import { InspectorClient } from './workerClient';
import { log } from '../util/log';

export interface InspectorDeps {
  /** Runs `moelab <args>` as a VS Code task (ProcessExecution) and resolves with its exit code. */
  runEngineTask(name: string, args: string[]): Promise<number | undefined>;
}

export const INSPECT_COMMAND = 'moelab.inspectRouting';
const LAST_EXPORT_KEY = 'moelab.inspector.lastExport';
/** Built by esbuild.mjs from extension/src/inspector/worker.ts. */
const WORKER_SCRIPT = 'dist/inspectorWorker.js';

export function registerInspector(context: vscode.ExtensionContext, deps: InspectorDeps): void {
  const client = new InspectorClient(context.asAbsolutePath(WORKER_SCRIPT));
  const view = new RoutingEditorView();

  const inspect = async (): Promise<void> => {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showInformationMessage(
        'MoE Lab: open a file and select the text whose routing you want to see.',
      );
      return;
    }
    const lastUsed = context.workspaceState.get<string>(LAST_EXPORT_KEY);
    const choice = await pickModel(await findModels(lastUsed), lastUsed);
    if (!choice) return;
    const exportDir = await ensureExport(choice, deps);
    if (!exportDir) return;
    await context.workspaceState.update(LAST_EXPORT_KEY, exportDir);

    // An empty selection means the whole document (cut at the inspector's token limit).
    const doc = editor.document;
    const range = editor.selection.isEmpty
      ? new vscode.Range(doc.positionAt(0), doc.positionAt(doc.getText().length))
      : editor.selection;
    const text = doc.getText(range);
    if (!text) return;
    const version = doc.version;
    const { result } = await vscode.window.withProgress(
      {
        location: vscode.ProgressLocation.Notification,
        title: `MoE Lab: routing ${text.length} characters through ${path.basename(exportDir)}…`,
      },
      () => client.inspect(exportDir, text),
    );
    if (doc.isClosed || doc.version !== version) return; // edited meanwhile: the offsets are stale
    view.show(doc, doc.offsetAt(range.start), result, defaultRouter(result, view.lastRouterKey));
    if (result.truncated) {
      void vscode.window.showWarningMessage(
        `MoE Lab: routed the first ${result.tokens.length} tokens; ${result.truncated} more were left out.`,
      );
    }
  };

  const switchRouter = async (): Promise<void> => {
    const doc = vscode.window.activeTextEditor?.document;
    const shown = view.current(doc);
    if (!doc || !shown) return;
    const picked = await pickRouter(shown.result, shown.router);
    if (picked !== undefined) view.setRouter(doc, picked);
  };

  context.subscriptions.push(
    view,
    vscode.commands.registerCommand(INSPECT_COMMAND, () => inspect().catch(report)),
    vscode.commands.registerCommand(PICK_ROUTER_COMMAND, () => switchRouter().catch(report)),
    vscode.commands.registerCommand(CLEAR_COMMAND, () => view.clear()),
    vscode.languages.registerHoverProvider('*', view),
    { dispose: () => void client.dispose() },
  );
}

/** The export directory for `choice`, exporting a checkpoint first (a task the user sees). */
async function ensureExport(choice: ModelChoice, deps: InspectorDeps): Promise<string | undefined> {
  if (choice.kind === 'export') return choice.dir;
  return exportCheckpoint(choice, deps);
}

async function exportCheckpoint(c: CheckpointChoice, deps: InspectorDeps): Promise<string | undefined> {
  if (!requireTrust('Exporting a checkpoint to ONNX')) return undefined;
  const go = await vscode.window.showInformationMessage(
    `${path.basename(c.dir)} has no ONNX export. Export it to ${vscode.workspace.asRelativePath(c.exportDir)} now?`,
    { modal: true },
    'Export',
  );
  if (go !== 'Export') return undefined;
  const args = ['export', '--ckpt', c.dir, '--format', 'onnx', '--out', c.exportDir];
  // A half-finished or stale export in the way would make the export refuse to start.
  if (fs.existsSync(c.exportDir)) args.push('--overwrite');
  const code = await deps.runEngineTask('Export ONNX', args);
  if (code !== 0) {
    void vscode.window.showErrorMessage(
      `MoE Lab: the export of ${c.dir} failed${code === undefined ? '' : ` (exit code ${code})`}; see the task terminal.`,
    );
    return undefined;
  }
  return c.exportDir;
}

function report(e: unknown): void {
  if (e instanceof InspectorError) {
    void vscode.window.showErrorMessage(`MoE Lab: ${e.message}`);
    return;
  }
  log.error('routing inspection failed', e);
  void vscode.window.showErrorMessage(`MoE Lab: routing inspection failed: ${(e as Error)?.message ?? e}`);
}
