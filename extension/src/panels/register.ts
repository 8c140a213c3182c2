// Placeholder until the webview panels land: the extension host calls this from activate().
import type * as vscode from 'vscode';
import type { RunStoreApi } from '../runs/model';

export interface PanelsApi {
  openDashboard(runIds?: string[]): void;
  openRouterPanel(runIds?: string[]): void;
}

export function registerPanels(_context: vscode.ExtensionContext, _store: RunStoreApi): PanelsApi {
  return {
    openDashboard: () => undefined,
    openRouterPanel: () => undefined,
  };
}
