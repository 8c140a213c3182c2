// Picks the Python interpreter that runs the engine and checks the engine's version there.
// No vscode import: the choice is pure and the probe is a plain execFile (no shell).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { envPython } from './pythonEnv';

/** The oldest engine whose CLI and run directory this extension understands. */
export const MIN_ENGINE_VERSION = '0.1.0';

export interface InterpreterSources {
  /** From the Python extension (ms-python.python), when installed and it has an environment. */
  pythonExtension?: string;
  /** The `moelab.pythonPath` setting. */
  setting?: string;
  /** <workspace>/.venv/bin/python (or Scripts\python.exe), when it exists and has moelab. */
  workspaceVenv?: string;
}

export interface InterpreterChoice {
  python: string;
  source: 'pythonExtension' | 'setting' | 'workspaceVenv' | 'default';
}

export function defaultPython(platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32' ? 'python' : 'python3';
}

/** Python extension first, then the setting, then a workspace .venv with the engine, then python3. */
export function chooseInterpreter(
  s: InterpreterSources,
  platform: NodeJS.Platform = process.platform,
): InterpreterChoice {
  if (s.pythonExtension) return { python: s.pythonExtension, source: 'pythonExtension' };
  if (s.setting && s.setting.trim()) return { python: s.setting.trim(), source: 'setting' };
  if (s.workspaceVenv) return { python: s.workspaceVenv, source: 'workspaceVenv' };
  return { python: defaultPython(platform), source: 'default' };
}

export function venvPython(folder: string, platform: NodeJS.Platform = process.platform): string | undefined {
  const p = envPython(path.join(folder, '.venv'), platform);
  return existsSync(p) ? p : undefined;
}

/** "moelab 0.1.0" → "0.1.0". */
export function parseEngineVersion(output: string): string | undefined {
  return /\bmoelab\s+v?(\d+\.\d+\.\d+)/i.exec(output)?.[1];
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

export type EngineProbe =
  | { state: 'ok'; version: string }
  | { state: 'old'; version: string }
  | { state: 'missing'; detail: string }
  | { state: 'noPython'; detail: string };

/** Runs `<python> -m moelab --version`. */
export function probeEngine(python: string, cwd?: string, timeoutMs = 20_000): Promise<EngineProbe> {
  return new Promise((resolve) => {
    execFile(
      python,
      ['-m', 'moelab', '--version'],
      { cwd, timeout: timeoutMs, windowsHide: true },
      (err, stdout, stderr) => {
        const out = `${stdout}\n${stderr}`;
        const version = parseEngineVersion(out);
        if (version) {
          resolve(
            compareVersions(version, MIN_ENGINE_VERSION) >= 0
              ? { state: 'ok', version }
              : { state: 'old', version },
          );
        } else if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
          resolve({ state: 'noPython', detail: `${python} not found` });
        } else {
          resolve({
            state: 'missing',
            detail: (stderr || stdout || String(err ?? '')).trim().split('\n').slice(-1)[0] ?? '',
          });
        }
      },
    );
  });
}

/** Whether the installed engine has a subcommand (`<python> -m moelab NAME --help` exits 0). */
export function hasSubcommand(
  python: string,
  name: string,
  cwd?: string,
  timeoutMs = 20_000,
): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(
      python,
      ['-m', 'moelab', name, '--help'],
      { cwd, timeout: timeoutMs, windowsHide: true },
      (err) => resolve(!err),
    );
  });
}
