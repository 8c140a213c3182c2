// The webview's only channel to the host. acquireVsCodeApi may be called once per page.
import type { PanelState, WebviewToHostMessage } from '../protocol';

interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}

declare function acquireVsCodeApi(): VsCodeApi;

let api: VsCodeApi | undefined;

function vscode(): VsCodeApi {
  api ??= acquireVsCodeApi();
  return api;
}

export function postToHost(message: WebviewToHostMessage): void {
  vscode().postMessage(message);
}

export function saveState(state: PanelState): void {
  vscode().setState(state);
}

/** Unvalidated: callers parse it with protocolGuards. */
export function loadState(): unknown {
  return vscode().getState();
}
