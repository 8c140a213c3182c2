// Argument arrays for every engine job. Each value is one argv element handed to a process
// (vscode.ProcessExecution / child_process.execFile): nothing is ever joined into a shell
// string, so spaces, quotes, `$(...)` and `;` in paths reach the engine verbatim.
// No vscode import.
import * as path from 'node:path';
import type { SlurmSettings } from './slurmArgs';

export interface EngineInvocation {
  command: string;
  args: string[];
  env?: Record<string, string>;
}

export type UpcycleMethod = 'sparse' | 'btx' | 'bam-ekv' | 'bam-skv' | 'upit';
export const UPCYCLE_METHODS: readonly UpcycleMethod[] = ['sparse', 'btx', 'bam-ekv', 'bam-skv', 'upit'];
export type ExportFormat = 'onnx' | 'hf';

export class TaskArgError extends Error {}

/**
 * Paths become absolute so that a file called `--help` or `-rf` can never be read as an option,
 * and so the task does not depend on its cwd. NUL cannot cross exec, so it is refused early.
 */
export function pathArg(p: string, base: string): string {
  checkArg(p);
  if (p.length === 0) throw new TaskArgError('empty path');
  return path.resolve(base, p);
}

function checkArg(a: string): string {
  if (a.includes('\0')) throw new TaskArgError(`argument contains a NUL character: ${JSON.stringify(a)}`);
  return a;
}

export function demoArgs(runsDir: string, base: string, quick = true): string[] {
  return ['demo', ...(quick ? ['--quick'] : []), '--out', pathArg(runsDir, base)];
}

export function runExperimentArgs(file: string, base: string): string[] {
  return ['run', pathArg(file, base)];
}

export interface UpcycleOptions {
  method: UpcycleMethod;
  seed: string;
  experts: string[];
  out: string;
  topK?: number;
  numExperts?: number;
  routerSeed?: number;
}

function intArg(name: string, v: number | undefined): string[] {
  if (v === undefined) return [];
  if (!Number.isSafeInteger(v) || v < 0)
    throw new TaskArgError(`${name} must be a non-negative integer, got ${v}`);
  return [name, String(v)];
}

export function upcycleArgs(o: UpcycleOptions, base: string): string[] {
  if (!UPCYCLE_METHODS.includes(o.method)) throw new TaskArgError(`unknown method ${o.method}`);
  return [
    'upcycle',
    '--method',
    o.method,
    '--seed',
    pathArg(o.seed, base),
    ...o.experts.flatMap((e) => ['--expert', pathArg(e, base)]),
    '--out',
    pathArg(o.out, base),
    ...intArg('--top-k', o.topK),
    ...intArg('--num-experts', o.numExperts),
    ...intArg('--router-seed', o.routerSeed),
  ];
}

export function exportArgs(ckpt: string, format: ExportFormat, out: string, base: string): string[] {
  if (format !== 'onnx' && format !== 'hf') throw new TaskArgError(`unknown export format ${format}`);
  return ['export', '--ckpt', pathArg(ckpt, base), '--format', format, '--out', pathArg(out, base)];
}

export type PlanParallel = 'fsdp' | 'fsdp+ep';

/** `moelab plan`: per-rank training memory of a checkpoint's model on `gpus` GPUs of `gpuMemGiB` each. */
export function planArgs(
  ckpt: string,
  gpus: number,
  gpuMemGiB: number,
  parallel: PlanParallel,
  seq: number,
  base: string,
): string[] {
  for (const [name, v] of [
    ['gpus', gpus],
    ['seq', seq],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new TaskArgError(`${name} must be a positive integer, not ${v}`);
  }
  if (!(gpuMemGiB > 0)) throw new TaskArgError(`GPU memory must be positive, not ${gpuMemGiB}`);
  if (parallel !== 'fsdp' && parallel !== 'fsdp+ep')
    throw new TaskArgError(`unknown parallelism ${parallel}`);
  return [
    'plan',
    '--ckpt',
    pathArg(ckpt, base),
    '--gpus',
    String(gpus),
    '--gpu-mem',
    String(gpuMemGiB),
    '--seq',
    String(seq),
    '--parallel',
    parallel,
  ];
}

/** "4 × 48", "4x48", "4 * 48.5" -> { gpus: 4, memGiB: 48 }. */
export function parseSetup(text: string): { gpus: number; memGiB: number } | undefined {
  const m = /^\s*(\d+)\s*[×x*]\s*(\d+(?:\.\d+)?)\s*(?:gi?b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const gpus = Number(m[1]);
  const memGiB = Number(m[2]);
  return gpus >= 1 && memGiB > 0 ? { gpus, memGiB } : undefined;
}

/** Weight analysis of checkpoints in step order: the first is the drift reference, the last is described. */
export function analyzeCheckpointsArgs(ckpts: string[], out: string, base: string): string[] {
  if (!ckpts.length) throw new TaskArgError('analyze needs at least one checkpoint');
  return ['analyze', ...ckpts.flatMap((c) => ['--ckpt', pathArg(c, base)]), '--out', pathArg(out, base)];
}

/** The tensors that differ between two checkpoints of one architecture. */
export function compareArgs(a: string, b: string, out: string, base: string): string[] {
  return ['analyze', '--compare', pathArg(a, base), pathArg(b, base), '--out', pathArg(out, base)];
}

/** pip arguments (after `<python> -m`) that install the engine into the chosen interpreter. */
export function installArgs(source: { editable?: string; local?: string }): string[] {
  if (source.editable) return ['pip', 'install', '-e', checkArg(source.editable)];
  if (source.local) return ['pip', 'install', checkArg(source.local)];
  return ['pip', 'install', 'moelab'];
}

export interface LauncherSettings {
  kind: 'local' | 'torchrun' | 'slurm';
  /** "auto" leaves the choice to the engine. Passed as MOELAB_DEVICE, not as a CLI flag. */
  device?: string;
  torchrunProcsPerNode?: number;
  /** Read by the callers that turn a training job into `moelab slurm submit` (see slurmArgs.ts). */
  slurm?: SlurmSettings;
}

/**
 * `<python> -m moelab <args>`, wrapped in torchrun when the launcher says so. Only training-like
 * commands are worth distributing; the caller decides via `distribute`. The slurm launcher is no
 * wrapper: callers replace the engine arguments with `moelab slurm ...` (slurmArgs.ts), which
 * then runs here as a local command, so the engine alone writes sbatch scripts.
 */
export function engineInvocation(
  python: string,
  engineArgs: string[],
  launcher: LauncherSettings = { kind: 'local' },
  distribute = false,
): EngineInvocation {
  engineArgs.forEach(checkArg);
  checkArg(python);
  const env: Record<string, string> = { PYTHONUNBUFFERED: '1' };
  if (launcher.device && launcher.device !== 'auto') env.MOELAB_DEVICE = checkArg(launcher.device);
  const moelab = ['-m', 'moelab', ...engineArgs];
  if (!distribute || launcher.kind !== 'torchrun') return { command: python, args: moelab, env };
  const n = launcher.torchrunProcsPerNode ?? 1;
  return {
    command: python,
    args: ['-m', 'torch.distributed.run', '--standalone', ...intArg('--nproc-per-node', n), ...moelab],
    env,
  };
}

/** Engine subcommands that train and therefore go through torchrun / `moelab slurm submit` when configured. */
export const DISTRIBUTED_COMMANDS: ReadonlySet<string> = new Set(['train', 'run']);
