// Typed access to the moelab.* settings that more than one service reads.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';

/** Absolute runs directories: relative entries are taken in every workspace folder. */
export function runsDirectories(only?: vscode.WorkspaceFolder): string[] {
  const folders = only ? [only] : (vscode.workspace.workspaceFolders ?? []);
  const out = new Set<string>();
  for (const folder of folders) {
    const entries = vscode.workspace.getConfiguration('moelab', folder).get<string[]>('runsDirectories', ['runs']);
    for (const raw of entries) {
      if (typeof raw !== 'string' || !raw.trim()) continue;
      let p = raw.trim().replace(/^\$\{workspaceFolder\}/, folder.uri.fsPath);
      if (p === '~' || p.startsWith('~/')) p = path.join(os.homedir(), p.slice(1));
      out.add(path.resolve(folder.uri.fsPath, p));
    }
  }
  return [...out];
}
