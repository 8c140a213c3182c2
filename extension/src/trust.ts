// Restricted Mode: runs and checkpoints stay viewable, but nothing that executes code starts.
import * as vscode from 'vscode';

/** True when launching is allowed; otherwise tells the user why nothing happens. */
export function requireTrust(action: string): boolean {
  if (vscode.workspace.isTrusted) return true;
  void vscode.window
    .showWarningMessage(
      `MoE Lab: ${action} needs a trusted workspace. In Restricted Mode you can view runs and checkpoints, but MoE Lab launches no Python jobs.`,
      'Manage Workspace Trust',
    )
    .then((pick) => {
      if (pick) void vscode.commands.executeCommand('workbench.trust.manage');
    });
  return false;
}
