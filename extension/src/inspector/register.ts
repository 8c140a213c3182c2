// Placeholder until the routing inspector lands: the extension host calls this from activate().
import type * as vscode from 'vscode';

export interface InspectorDeps {
  /** Runs `moelab <args>` as a VS Code task (ProcessExecution) and resolves with its exit code. */
  runEngineTask(name: string, args: string[]): Promise<number | undefined>;
}

export function registerInspector(_context: vscode.ExtensionContext, _deps: InspectorDeps): void {
  // The command `moelab.inspectRouting` is registered here once the inspector exists.
}
