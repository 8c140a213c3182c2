// Typed access to the moelab.* settings that more than one service reads.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { SlurmSettings } from './jobs/slurmArgs';

/** Absolute runs directories: relative entries are taken in every workspace folder. */
export function runsDirectories(only?: vscode.WorkspaceFolder): string[] {
  const folders = only ? [only] : (vscode.workspace.workspaceFolders ?? []);
  const out = new Set<string>();
  for (const folder of folders) {
    const entries = vscode.workspace
      .getConfiguration('moelab', folder)
      .get<string[]>('runsDirectories', ['runs']);
    for (const raw of entries) {
      if (typeof raw !== 'string' || !raw.trim()) continue;
      let p = raw.trim().replace(/^\$\{workspaceFolder\}/, folder.uri.fsPath);
      if (p === '~' || p.startsWith('~/')) p = path.join(os.homedir(), p.slice(1));
      out.add(path.resolve(folder.uri.fsPath, p));
    }
  }
  return [...out];
}

/**
 * moelab.slurm.*, with only the values a user set: an unset one is left to the config's "slurm"
 * object (the engine's flags override it, so passing a default would hide the file's choice).
 */
export function slurmSettings(folder?: vscode.WorkspaceFolder): SlurmSettings {
  const c = vscode.workspace.getConfiguration('moelab.slurm', folder);
  const str = (k: string) => {
    const v = c.get<unknown>(k);
    return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
  };
  const int = (k: string) => {
    const v = c.get<unknown>(k);
    return typeof v === 'number' ? v : undefined;
  };
  return {
    partition: str('partition'),
    account: str('account'),
    nodes: int('nodes'),
    gpusPerNode: int('gpusPerNode'),
    procsPerNode: int('procsPerNode'),
    time: str('time'),
    cpusPerTask: int('cpusPerTask'),
  };
}

export type LauncherKind = 'local' | 'torchrun' | 'slurm';

export function launcherKind(folder?: vscode.WorkspaceFolder): LauncherKind {
  const v = vscode.workspace.getConfiguration('moelab', folder).get<string>('launcher', 'local');
  return v === 'torchrun' || v === 'slurm' ? v : 'local';
}
