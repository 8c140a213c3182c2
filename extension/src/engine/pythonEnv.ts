// What kind of Python an interpreter is (a virtual environment? externally managed, PEP 668?) and
// whether MoE Lab may pip-install into it. No vscode import.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

/** The oldest Python the engine supports (engine/pyproject.toml requires-python). */
export const MIN_PYTHON: readonly [number, number] = [3, 10];

// PEP 668: the marker lives in the stdlib directory; a virtual environment shares its base's
// stdlib but is never externally managed, so the marker only counts outside one.
const INFO_SCRIPT = `
import json, os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
print(json.dumps({"version": list(sys.version_info[:3]), "executable": sys.executable, "venv": venv,
                  "marker": os.path.isfile(marker), "stdlib": sysconfig.get_path("stdlib")}))
`;

export interface PythonInfo {
  version: [number, number, number];
  executable: string;
  /** sys.prefix != sys.base_prefix. */
  venv: boolean;
  /** PEP 668: EXTERNALLY-MANAGED in the stdlib directory and not in a virtual environment. */
  externallyManaged: boolean;
  stdlib: string;
}

export function parsePythonInfo(stdout: string): PythonInfo | undefined {
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (!line) return undefined;
  try {
    const o = JSON.parse(line) as {
      version: number[];
      executable: string;
      venv: boolean;
      marker: boolean;
      stdlib: string;
    };
    const [a = 0, b = 0, c = 0] = o.version;
    return {
      version: [a, b, c],
      executable: o.executable,
      venv: o.venv === true,
      externallyManaged: o.marker === true && o.venv !== true,
      stdlib: o.stdlib,
    };
  } catch {
    return undefined;
  }
}

export function inspectPython(python: string, timeoutMs = 20_000): Promise<PythonInfo | undefined> {
  return new Promise((resolve) => {
    execFile(python, ['-I', '-c', INFO_SCRIPT], { timeout: timeoutMs, windowsHide: true }, (err, stdout) =>
      resolve(err ? undefined : parsePythonInfo(stdout)),
    );
  });
}

export function versionString(info: PythonInfo): string {
  return info.version.join('.');
}

export function supportedPython(info: PythonInfo): boolean {
  const [maj, min] = info.version;
  return maj > MIN_PYTHON[0] || (maj === MIN_PYTHON[0] && min >= MIN_PYTHON[1]);
}

export type InPlaceInstall = { allowed: true; confirm?: string } | { allowed: false; reason: string };

/**
 * May the engine be pip-installed into this interpreter itself? Never into an externally managed
 * one (pip refuses, and the system's package manager owns it); outside a virtual environment
 * only when the user chose that interpreter themselves (setting or Python extension), and then
 * after saying that it is a global environment.
 */
export function inPlaceInstall(info: PythonInfo, explicitChoice: boolean): InPlaceInstall {
  if (info.externallyManaged)
    return {
      allowed: false,
      reason: `${info.executable} is externally managed (PEP 668): its packages belong to the system`,
    };
  if (info.venv) return { allowed: true };
  if (!explicitChoice) return { allowed: false, reason: `${info.executable} is not a virtual environment` };
  return {
    allowed: true,
    confirm: `${info.executable} is not a virtual environment: the engine and torch would go into its global site-packages.`,
  };
}

/** The interpreter inside a virtual environment folder. */
export function envPython(envDir: string, platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32'
    ? path.win32.join(envDir, 'Scripts', 'python.exe')
    : path.posix.join(envDir, 'bin', 'python');
}

export function envExists(envDir: string, platform: NodeJS.Platform = process.platform): boolean {
  return existsSync(envPython(envDir, platform));
}

/** Where moelab.pythonPath is set now (what `WorkspaceConfiguration.inspect` reports). */
export interface SettingLevels {
  workspaceFolderValue?: unknown;
  workspaceValue?: unknown;
}

/**
 * Where to write the new interpreter: at the level that holds a value now (else that value
 * would still win), or globally for a global-storage environment, else for the workspace.
 */
export function settingTarget(
  levels: SettingLevels | undefined,
  globalEnv: boolean,
): 'workspaceFolder' | 'workspace' | 'global' {
  if (levels?.workspaceFolderValue !== undefined) return 'workspaceFolder';
  if (levels?.workspaceValue !== undefined) return 'workspace';
  return globalEnv ? 'global' : 'workspace';
}
