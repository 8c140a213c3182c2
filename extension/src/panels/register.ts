// Registers the dashboard and router panel: commands' entry points (PanelsApi),
// and WebviewPanelSerializers so open panels come back after a reload.
import * as vscode from 'vscode';
import type { JobRunner } from '../jobs/jobRunner';
import type { RunStoreApi } from '../runs/model';
import type { PanelKind } from '../../../webview/src/protocol';
import { runIdsFromState } from '../../../webview/src/protocolGuards';
import { createPanel, PanelHost, VIEW_TYPES, webviewOptions, type WeightsOptions } from './panelHost';
import { WarningLedger } from './warningLedger';
import { WeightsAnalyzer } from './weightsAnalysis';
import { log as hostLog } from '../util/log';

export interface PanelsApi {
  openDashboard(runIds?: string[]): void;
  /** weights: what the Weights tab analyzes (default: the first run) and whether to open on it. */
  openRouterPanel(runIds?: string[], weights?: WeightsOptions): void;
}

export { VIEW_TYPES };

/** runner: starts the Weights tab's `moelab analyze` tasks (without it the tab shows cached results only). */
export function registerPanels(
  context: vscode.ExtensionContext,
  store: RunStoreApi,
  runner?: JobRunner,
): PanelsApi {
  const ledger = new WarningLedger();
  const open = new Map<PanelKind, PanelHost>();
  // Dropped messages and failed analyses: the one "MoE Lab" log (util/log.ts).
  const log = (line: string): void => hostLog.warn(line);
  const storage = context.globalStorageUri
    ? vscode.Uri.joinPath(context.globalStorageUri, 'analysis').fsPath
    : undefined;
  const weights = new WeightsAnalyzer(runner, storage, log, () => vscode.workspace.isTrusted);

  const attach = (
    kind: PanelKind,
    panel: vscode.WebviewPanel,
    runIds: string[],
    weightsOptions?: WeightsOptions,
  ): PanelHost => {
    const host = new PanelHost(
      kind,
      panel,
      runIds,
      store,
      context.extensionUri,
      ledger,
      log,
      weights,
      weightsOptions,
    );
    open.set(kind, host);
    panel.onDidDispose(() => {
      if (open.get(kind) === host) open.delete(kind);
    });
    return host;
  };

  // One panel per kind: opening again reveals it with the new selection.
  const show = (kind: PanelKind, runIds: string[] = [], weightsOptions?: WeightsOptions): void => {
    const existing = open.get(kind);
    if (existing) {
      existing.setRuns(runIds, weightsOptions);
      existing.panel.reveal();
      return;
    }
    attach(kind, createPanel(kind, context.extensionUri), runIds, weightsOptions);
  };

  for (const kind of ['dashboard', 'router'] as const) {
    context.subscriptions.push(
      vscode.window.registerWebviewPanelSerializer(VIEW_TYPES[kind], {
        deserializeWebviewPanel: async (panel, state) => {
          panel.webview.options = webviewOptions(context.extensionUri);
          attach(kind, panel, runIdsFromState(state));
        },
      }),
    );
  }
  context.subscriptions.push({ dispose: () => [...open.values()].forEach((h) => h.dispose()) });

  return {
    openDashboard: (runIds) => show('dashboard', runIds),
    openRouterPanel: (runIds, weightsOptions) => show('router', runIds, weightsOptions),
  };
}
