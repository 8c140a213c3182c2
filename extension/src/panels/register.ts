// Registers the dashboard and router panel: commands' entry points (PanelsApi),
// and WebviewPanelSerializers so open panels come back after a reload.
import * as vscode from 'vscode';
import type { RunStoreApi } from '../runs/model';
import type { PanelKind } from '../../../webview/src/protocol';
import { runIdsFromState } from '../../../webview/src/protocolGuards';
import { createPanel, PanelHost, VIEW_TYPES, webviewOptions } from './panelHost';
import { WarningLedger } from './warningLedger';

export interface PanelsApi {
  openDashboard(runIds?: string[]): void;
  openRouterPanel(runIds?: string[]): void;
}

export { VIEW_TYPES };

export function registerPanels(context: vscode.ExtensionContext, store: RunStoreApi): PanelsApi {
  const output = vscode.window.createOutputChannel('MoE Lab Panels', { log: true });
  const ledger = new WarningLedger();
  const open = new Map<PanelKind, PanelHost>();

  const attach = (kind: PanelKind, panel: vscode.WebviewPanel, runIds: string[]): PanelHost => {
    const host = new PanelHost(kind, panel, runIds, store, context.extensionUri, ledger, (line) => output.appendLine(line));
    open.set(kind, host);
    panel.onDidDispose(() => {
      if (open.get(kind) === host) open.delete(kind);
    });
    return host;
  };

  // One panel per kind: opening again reveals it with the new selection.
  const show = (kind: PanelKind, runIds: string[] = []): void => {
    const existing = open.get(kind);
    if (existing) {
      existing.setRuns(runIds);
      existing.panel.reveal();
      return;
    }
    attach(kind, createPanel(kind, context.extensionUri), runIds);
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
  context.subscriptions.push(output, { dispose: () => [...open.values()].forEach((h) => h.dispose()) });

  return {
    openDashboard: (runIds) => show('dashboard', runIds),
    openRouterPanel: (runIds) => show('router', runIds),
  };
}
