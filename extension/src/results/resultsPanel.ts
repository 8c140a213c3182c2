// The Results panel's host side: reads the study.json / eval.json it shows, posts it to the
// webview (same CSP, nonce and ready handshake as the other panels), watches the file and
// re-reads it when eval runs finish, and puts the copy buttons' text on the clipboard.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ResultsMessage } from '../../../webview/src/protocol';
import { parseWebviewToHost } from '../../../webview/src/protocolGuards';
import type { RunStoreApi } from '../runs/model';
import { runColors } from '../runs/runColors';
import { makeNonce } from '../panels/nonce';
import { webviewOptions } from '../panels/panelHost';
import { webviewHtml } from '../panels/webviewHtml';
import { parseResults, ResultsFileError } from './resultsFile';
import { runForLabel } from './resultsTarget';
import { log, why } from '../util/log';

export const RESULTS_VIEW_TYPE = 'moelab.results';
const TITLE = 'MoE Lab: Results';
const COPIED: Record<string, string> = { markdown: 'Markdown', latex: 'LaTeX', csv: 'CSV' };

export class ResultsPanel implements vscode.Disposable {
  private readonly disposables: vscode.Disposable[] = [];
  private watcher: vscode.FileSystemWatcher | undefined;
  private ready = false;
  private lastText: string | undefined;
  private doneEvals = new Set<string>();
  private pending: NodeJS.Timeout | undefined;

  constructor(
    readonly panel: vscode.WebviewPanel,
    private file: string,
    private readonly store: RunStoreApi,
    extensionUri: vscode.Uri,
    private readonly log: (line: string) => void,
  ) {
    const webview = panel.webview;
    webview.options = webviewOptions(extensionUri);
    const asset = (f: string): string =>
      webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webview', f)).toString();
    webview.html = webviewHtml({
      title: TITLE,
      cspSource: webview.cspSource,
      nonce: makeNonce(),
      scriptUri: asset('results.js'),
      styleUri: asset('results.css'),
    });
    this.doneEvals = this.finishedEvals();
    this.disposables.push(
      webview.onDidReceiveMessage((raw) => void this.receive(raw)),
      // Live: an eval run that finishes writes the rows this panel shows.
      store.onDidChangeRuns(() => {
        const done = this.finishedEvals();
        const fresh = [...done].some((id) => !this.doneEvals.has(id));
        this.doneEvals = done;
        if (fresh) this.schedule();
      }),
      panel.onDidDispose(() => this.dispose()),
    );
    this.watch();
  }

  /** Show another file in the same panel. */
  show(file: string): void {
    if (file !== this.file) {
      this.file = file;
      this.lastText = undefined;
      this.watch();
      if (this.ready) void this.send();
    }
    this.panel.reveal();
  }

  private finishedEvals(): Set<string> {
    return new Set(
      this.store
        .list()
        .filter((r) => r.stage === 'eval' && r.status === 'done')
        .map((r) => r.id),
    );
  }

  private watch(): void {
    this.watcher?.dispose();
    const pattern = new vscode.RelativePattern(
      vscode.Uri.file(path.dirname(this.file)),
      path.basename(this.file),
    );
    this.watcher = vscode.workspace.createFileSystemWatcher(pattern);
    const changed = (): void => this.schedule();
    this.watcher.onDidChange(changed);
    this.watcher.onDidCreate(changed);
    this.watcher.onDidDelete(changed);
  }

  /** Writers rename into place and runs end in bursts: read once things settle. */
  private schedule(): void {
    if (this.pending) clearTimeout(this.pending);
    this.pending = setTimeout(() => {
      this.pending = undefined;
      if (this.ready) void this.send();
    }, 200);
  }

  private async send(): Promise<void> {
    const message = await this.read();
    if (message.doc && this.lastText === JSON.stringify(message.doc)) return;
    this.lastText = message.doc ? JSON.stringify(message.doc) : undefined;
    void this.panel.webview.postMessage(message);
  }

  private async read(): Promise<ResultsMessage> {
    const base = {
      type: 'results' as const,
      file: this.file,
      label: vscode.workspace.asRelativePath(this.file),
    };
    let text: string;
    try {
      text = new TextDecoder().decode(await vscode.workspace.fs.readFile(vscode.Uri.file(this.file)));
    } catch (e) {
      log.debug(`Results: ${this.file} cannot be read: ${why(e)}`);
      return { ...base, doc: null, error: `${base.label} cannot be read (it may not be written yet).` };
    }
    const runs = this.store.list();
    const colors = runColors(runs);
    const dir = path.dirname(this.file);
    try {
      return {
        ...base,
        doc: parseResults(text, path.basename(this.file), (label) =>
          colors.get(runForLabel(label, runs, dir)?.id ?? ''),
        ),
        error: null,
      };
    } catch (err) {
      if (!(err instanceof ResultsFileError)) this.log(`[results] ${String(err)}`);
      return { ...base, doc: null, error: err instanceof Error ? err.message : String(err) };
    }
  }

  private async receive(raw: unknown): Promise<void> {
    const message = parseWebviewToHost(raw);
    if (!message) {
      this.log('[results] dropped a malformed message from the Results webview');
      return;
    }
    switch (message.type) {
      case 'ready':
        this.ready = true;
        this.lastText = undefined;
        await this.send();
        return;
      case 'copyText':
        await vscode.env.clipboard.writeText(message.text);
        void vscode.window.showInformationMessage(`Copied the results table as ${COPIED[message.format]}.`);
        return;
      case 'protocolError':
        this.log(`[results] webview dropped a message: ${message.detail} (${message.dropped} so far)`);
        return;
      default:
        return;
    }
  }

  dispose(): void {
    if (this.pending) clearTimeout(this.pending);
    this.watcher?.dispose();
    while (this.disposables.length) this.disposables.pop()?.dispose();
  }
}

export function createResultsPanel(extensionUri: vscode.Uri): vscode.WebviewPanel {
  return vscode.window.createWebviewPanel(
    RESULTS_VIEW_TYPE,
    TITLE,
    vscode.ViewColumn.Active,
    webviewOptions(extensionUri),
  );
}
