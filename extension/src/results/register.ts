// "MoE Lab: Open Results": from the palette (the study.json / eval.json files of the workspace and
// the run store), from an eval run in the Runs view, and from a study.json or eval.json in the
// explorer or the editor title. One Results panel, restored after a reload by its serializer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { parseResultsState } from '../../../webview/src/protocolGuards';
import { runIdsFrom } from '../commands/commandArgs';
import type { RunStoreApi } from '../runs/model';
import { createResultsPanel, RESULTS_VIEW_TYPE, ResultsPanel } from './resultsPanel';
import { RESULTS_FILE, resultsCandidates } from './resultsTarget';
import { log as hostLog } from '../util/log';

const exists = (file: string): boolean => fs.existsSync(file);

export function registerResults(context: vscode.ExtensionContext, store: RunStoreApi): vscode.Disposable[] {
  // Dropped messages and unreadable files: the one "MoE Lab" log (util/log.ts).
  const log = (line: string): void => hostLog.warn(line);
  let open: ResultsPanel | undefined;

  const attach = (panel: vscode.WebviewPanel, file: string): void => {
    const host = new ResultsPanel(panel, file, store, context.extensionUri, log);
    open = host;
    panel.onDidDispose(() => {
      if (open === host) open = undefined;
    });
  };
  const show = (file: string): void => {
    if (open) open.show(file);
    else attach(createResultsPanel(context.extensionUri), file);
  };

  /** The results of an eval run: its study's study.json, else its own eval.json. */
  const forRun = (id: string): string | undefined => {
    const run = store.get(id);
    return run ? resultsCandidates(run.dir).find(exists) : undefined;
  };

  const pick = async (): Promise<string | undefined> => {
    const active = vscode.window.activeTextEditor?.document.uri;
    if (active?.scheme === 'file' && RESULTS_FILE.test(path.basename(active.fsPath))) return active.fsPath;
    const found = new Set<string>();
    for (const uri of await vscode.workspace.findFiles('**/{study,eval}.json', '**/node_modules/**', 500)) {
      // A run's own eval.json belongs to training runs too: keep the pipeline's (an eval run's) and every study.json.
      const dir = path.dirname(uri.fsPath);
      if (
        path.basename(uri.fsPath) === 'study.json' ||
        store.list().some((r) => r.stage === 'eval' && r.dir === dir)
      )
        found.add(uri.fsPath);
    }
    for (const r of store.list())
      if (r.stage === 'eval')
        resultsCandidates(r.dir)
          .filter(exists)
          .forEach((f) => found.add(f));
    const files = [...found].sort(
      (a, b) => Number(b.endsWith('study.json')) - Number(a.endsWith('study.json')) || a.localeCompare(b),
    );
    if (files.length <= 1) return files[0];
    const choice = await vscode.window.showQuickPick(
      files.map((f) => ({
        label: vscode.workspace.asRelativePath(f),
        description: f.endsWith('study.json') ? 'study (seeds, claims)' : 'one evaluation',
        file: f,
      })),
      { title: 'MoE Lab: open which results?' },
    );
    return choice?.file;
  };

  context.subscriptions.push(
    { dispose: () => open?.dispose() },
    vscode.window.registerWebviewPanelSerializer(RESULTS_VIEW_TYPE, {
      deserializeWebviewPanel: async (panel, state) => {
        const restored = parseResultsState(state);
        if (restored?.file) attach(panel, restored.file);
        else panel.dispose();
      },
    }),
  );

  return [
    vscode.commands.registerCommand('moelab.openResults', async (arg?: unknown, selection?: unknown) => {
      let file: string | undefined;
      if (arg instanceof vscode.Uri) file = arg.fsPath;
      else {
        const ids = runIdsFrom(arg, selection);
        file = ids.map(forRun).find((f) => f !== undefined);
        if (ids.length && !file) {
          void vscode.window.showWarningMessage(
            `No study.json or eval.json for run ${ids[0]} yet: results appear when its evaluation finishes.`,
          );
          return;
        }
      }
      file ??= await pick();
      if (!file) {
        void vscode.window.showInformationMessage(
          'No results yet: run the demo or an experiment with an eval stage (it writes eval.json; `moelab demo --seeds` writes study.json).',
        );
        return;
      }
      show(file);
    }),
  ];
}
