// The host side of one webview panel: HTML with CSP and nonce, the ready
// handshake, live forwarding of the run store's appends, and validated handling
// of what the webview posts (malformed messages are dropped and counted).
import * as vscode from 'vscode';
import type { MetricRecord, RoutingRecord, RunStoreApi } from '../runs/model';
import type {
  PanelKind,
  RunSummary,
  WebviewToHostMessage,
  WeightsTarget,
} from '../../../webview/src/protocol';
import { parseWebviewToHost } from '../../../webview/src/protocolGuards';
import { type AnalysisSpec, runSpec } from './analysisCache';
import { makeNonce } from './nonce';
import { runColors } from '../runs/runColors';
import { seedOffsets } from '../runs/sinceSeed';
import { isEmptyBlock, selectRuns, toMetricBlocks, toRoutingBlock, toRunSummary } from './panelData';
import type { WarningLedger } from './warningLedger';
import type { WeightsAnalyzer } from './weightsAnalysis';
import { webviewHtml } from './webviewHtml';

export const VIEW_TYPES: Record<PanelKind, string> = {
  dashboard: 'moelab.dashboard',
  router: 'moelab.routerPanel',
};
const TITLES: Record<PanelKind, string> = {
  dashboard: 'MoE Lab: Dashboard',
  router: 'MoE Lab: Router Panel',
};

export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions & vscode.WebviewPanelOptions {
  return {
    enableScripts: true,
    // Only the bundle: no workspace files, no media outside dist/webview.
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist', 'webview')],
    retainContextWhenHidden: false,
  };
}

export function createPanel(kind: PanelKind, extensionUri: vscode.Uri): vscode.WebviewPanel {
  return vscode.window.createWebviewPanel(
    VIEW_TYPES[kind],
    TITLES[kind],
    vscode.ViewColumn.Active,
    webviewOptions(extensionUri),
  );
}

/** What the router panel's Weights tab shows: an explicit target, else the panel's first run. */
export interface WeightsOptions {
  spec?: AnalysisSpec;
  /** Open on the Weights tab (once: a reload keeps the tab the user chose). */
  show: boolean;
}

export class PanelHost implements vscode.Disposable {
  private readonly disposables: vscode.Disposable[] = [];
  private ready = false;
  private weightsSpec: AnalysisSpec | undefined;
  private showWeights = false;
  /** Messages from the webview that failed validation (for diagnostics). */
  dropped = 0;

  constructor(
    readonly kind: PanelKind,
    readonly panel: vscode.WebviewPanel,
    private runIds: string[],
    private readonly store: RunStoreApi,
    private readonly extensionUri: vscode.Uri,
    private readonly ledger: WarningLedger,
    private readonly log: (line: string) => void,
    private readonly weights?: WeightsAnalyzer,
    weightsOptions?: WeightsOptions,
  ) {
    this.weightsSpec = weightsOptions?.spec;
    this.showWeights = weightsOptions?.show ?? false;
    const webview = panel.webview;
    webview.options = webviewOptions(extensionUri);
    const asset = (file: string): string =>
      webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webview', file)).toString();
    const bundle = kind === 'dashboard' ? 'dashboard' : 'router';
    webview.html = webviewHtml({
      title: TITLES[kind],
      cspSource: webview.cspSource,
      nonce: makeNonce(),
      scriptUri: asset(`${bundle}.js`),
      styleUri: asset(`${bundle}.css`),
    });
    this.disposables.push(
      webview.onDidReceiveMessage((raw) => this.receive(raw)),
      store.onDidAppend((append) => this.forward(append.runId, append)),
      store.onDidChangeRuns(() => this.post({ type: 'runs', runs: this.summaries() })),
      panel.onDidDispose(() => this.dispose()),
    );
  }

  /** Show other runs (and weights of another target) in the same panel. */
  setRuns(runIds: string[], weights?: WeightsOptions): void {
    this.runIds = runIds;
    this.weightsSpec = weights?.spec;
    this.showWeights = weights?.show ?? false;
    if (this.ready) this.sendInit();
  }

  private weightsTarget(): WeightsTarget | null {
    if (this.weightsSpec) return { kind: this.weightsSpec.kind, label: this.weightsSpec.label };
    const run = this.runIds.length ? this.store.get(this.runIds[0]) : undefined;
    return run ? { kind: 'run', label: `run ${run.id}` } : null;
  }

  /** Resolved when the tab asks, so a run's checkpoints are listed as they are then. */
  private async resolveWeightsSpec(): Promise<AnalysisSpec | undefined> {
    if (this.weightsSpec) return this.weightsSpec;
    const run = this.runIds.length ? this.store.get(this.runIds[0]) : undefined;
    return run ? runSpec(run) : undefined;
  }

  private runs(): ReturnType<RunStoreApi['list']> {
    return selectRuns(this.store.list(), this.runIds);
  }

  /** The panel's runs, each in its colour over the whole store (the same in every panel). */
  private summaries(): RunSummary[] {
    const all = this.store.list();
    const colors = runColors(all);
    // Only the dashboard draws the "since the seed" axes; ancestors may be outside the panel's runs.
    const offsets = this.kind === 'dashboard' ? seedOffsets(all, (id) => this.store.metrics(id)) : undefined;
    return this.runs().map((r) => toRunSummary(r, colors.get(r.id), offsets?.get(r.id)));
  }

  private shows(runId: string): boolean {
    return this.runIds.length === 0 || this.runIds.includes(runId);
  }

  private post(message: unknown): void {
    if (this.ready) void this.panel.webview.postMessage(message);
  }

  private sendInit(): void {
    const runs = this.runs();
    const summaries = this.summaries();
    if (this.kind === 'dashboard') {
      void this.panel.webview.postMessage({
        type: 'init',
        panel: 'dashboard',
        runIds: this.runIds,
        runs: summaries,
        blocks: runs.flatMap((r) => toMetricBlocks(r.id, this.store.metrics(r.id))),
      });
    } else {
      const routing = runs
        .map((r) => toRoutingBlock(r.id, this.store.routing(r.id)))
        .filter((b) => !isEmptyBlock(b));
      void this.panel.webview.postMessage({
        type: 'init',
        panel: 'router',
        runIds: this.runIds,
        runs: summaries,
        routing,
        weights: { target: this.weightsTarget(), show: this.showWeights },
      });
      this.showWeights = false;
    }
  }

  private forward(
    runId: string,
    append: { metrics: readonly MetricRecord[]; routing: readonly RoutingRecord[] },
  ): void {
    if (!this.ready || !this.shows(runId)) return;
    if (this.kind === 'dashboard' && append.metrics.length) {
      this.post({ type: 'appendMetrics', blocks: toMetricBlocks(runId, append.metrics) });
    } else if (this.kind === 'router' && append.routing.length) {
      this.post({ type: 'appendRouting', routing: [toRoutingBlock(runId, append.routing)] });
    }
  }

  private receive(raw: unknown): void {
    const message = parseWebviewToHost(raw);
    if (!message) {
      this.dropped++;
      this.log(`[panels] dropped malformed message from the ${this.kind} webview (${this.dropped} so far)`);
      return;
    }
    try {
      void this.handle(message);
    } catch (err) {
      this.log(`[panels] ${this.kind}: ${String(err)}`);
    }
  }

  private async handle(message: WebviewToHostMessage): Promise<void> {
    switch (message.type) {
      case 'ready':
        // Also after the webview reloads (it was hidden, or VS Code restarted).
        this.ready = true;
        this.sendInit();
        return;
      case 'protocolError':
        this.log(
          `[panels] ${this.kind} webview dropped a message: ${message.detail} (${message.dropped} so far)`,
        );
        return;
      case 'routerWarnings':
        for (const text of this.ledger.take(message.warnings, (id) => this.store.get(id)?.id ?? id)) {
          void vscode.window.showWarningMessage(text);
        }
        return;
      case 'saveFile':
        await this.save(message.suggestedName, message.format, message.data);
        return;
      case 'requestAnalysis':
        if (this.kind !== 'router') return;
        if (!this.weights) {
          this.post({
            type: 'analysisStatus',
            target: this.weightsTarget(),
            state: 'unavailable',
            detail: 'Weight analysis is not available in this window.',
          });
          return;
        }
        try {
          await this.weights.request(await this.resolveWeightsSpec(), message.force, (m) => this.post(m));
        } catch (err) {
          // Reading the run folder or creating the cache folder failed: say so in the tab.
          this.log(`[panels] weight analysis: ${String(err)}`);
          this.post({
            type: 'analysisStatus',
            target: this.weightsTarget(),
            state: 'failed',
            detail: `Could not analyze: ${String(err)}`.slice(0, 1900),
          });
        }
        return;
    }
  }

  private async save(name: string, format: 'png' | 'csv', data: string): Promise<void> {
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const target = await vscode.window.showSaveDialog({
      defaultUri: folder ? vscode.Uri.joinPath(folder, name) : undefined,
      filters: format === 'png' ? { 'PNG image': ['png'] } : { CSV: ['csv'] },
    });
    if (!target) return;
    const bytes = format === 'png' ? Buffer.from(data, 'base64') : Buffer.from(data, 'utf8');
    await vscode.workspace.fs.writeFile(target, bytes);
    void vscode.window.showInformationMessage(`Saved ${vscode.workspace.asRelativePath(target)}`);
  }

  dispose(): void {
    while (this.disposables.length) this.disposables.pop()?.dispose();
  }
}
