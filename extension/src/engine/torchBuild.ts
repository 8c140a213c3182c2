// Which torch build a new environment gets: CUDA where an NVIDIA GPU is present, the CPU build
// otherwise. No vscode import: the detection takes its file system and PATH as arguments.
import { accessSync, constants, existsSync } from 'node:fs';
import * as path from 'node:path';

/** PyTorch's own index of CPU-only wheels (PyPI's Linux wheels are the CUDA builds, ~2.5 GB with their libraries). */
export const TORCH_CPU_INDEX = 'https://download.pytorch.org/whl/cpu';
/** PyPI's Windows wheels are CPU-only; the CUDA ones come from PyTorch's index. */
export const TORCH_CUDA_INDEX_WINDOWS = 'https://download.pytorch.org/whl/cu128';

export interface GpuProbe {
  nvidia: boolean;
  /** What was found, or what was looked for: said to the user. */
  evidence: string;
}

export interface GpuProbeEnv {
  platform: NodeJS.Platform;
  /** The PATH to search for nvidia-smi. */
  pathVar: string;
  exists?: (p: string) => boolean;
  isExecutable?: (p: string) => boolean;
}

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** An NVIDIA driver is loaded (/proc/driver/nvidia) or its nvidia-smi is on PATH. */
export function detectNvidia(env: GpuProbeEnv): GpuProbe {
  const exists = env.exists ?? existsSync;
  const isExe = env.isExecutable ?? executable;
  if (env.platform === 'linux' && exists('/proc/driver/nvidia/version'))
    return { nvidia: true, evidence: 'the NVIDIA driver is loaded (/proc/driver/nvidia)' };
  const names = env.platform === 'win32' ? ['nvidia-smi.exe'] : ['nvidia-smi'];
  const dirs = env.pathVar.split(env.platform === 'win32' ? ';' : ':').filter(Boolean);
  if (env.platform === 'win32') dirs.push('C:\\Windows\\System32');
  const join = env.platform === 'win32' ? path.win32.join : path.posix.join;
  for (const d of dirs)
    for (const n of names) {
      const p = join(d, n);
      if (exists(p) && (env.platform === 'win32' || isExe(p)))
        return { nvidia: true, evidence: `${p} is present` };
    }
  return {
    nvidia: false,
    evidence:
      env.platform === 'linux' ? 'no /proc/driver/nvidia and no nvidia-smi on PATH' : 'no nvidia-smi on PATH',
  };
}

export interface TorchPlan {
  build: 'cuda' | 'cpu';
  /** One sentence for the progress notification: which build and why. */
  reason: string;
  /** Added to the user's own indexes (pip config), never in place of them. */
  extraIndexUrl?: string;
  /** Pin the newest `+cpu` release the indexes offer (`pip index versions`), since a plain
   * `torch` would pick PyPI's CUDA build whenever PyPI has a newer version than the CPU index. */
  pinCpuBuild: boolean;
}

export function torchPlan(platform: NodeJS.Platform, gpu: GpuProbe): TorchPlan {
  if (platform === 'darwin')
    return {
      build: 'cpu',
      reason: 'macOS: the PyPI build (CPU, and the Apple GPU through MPS).',
      pinCpuBuild: false,
    };
  if (gpu.nvidia) {
    const reason = `CUDA build of torch: ${gpu.evidence}.`;
    return platform === 'win32'
      ? { build: 'cuda', reason, extraIndexUrl: TORCH_CUDA_INDEX_WINDOWS, pinCpuBuild: false }
      : { build: 'cuda', reason, pinCpuBuild: false };
  }
  const reason = `CPU build of torch: ${gpu.evidence}.`;
  // Windows: PyPI's torch is the CPU build already.
  return platform === 'win32'
    ? { build: 'cpu', reason, pinCpuBuild: false }
    : { build: 'cpu', reason, extraIndexUrl: TORCH_CPU_INDEX, pinCpuBuild: true };
}

function versionKey(v: string): number[] {
  return v
    .replace(/\+.*$/, '')
    .split('.')
    .map((x) => parseInt(x, 10) || 0);
}

function newer(a: string, b: string): boolean {
  const ka = versionKey(a);
  const kb = versionKey(b);
  for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
    const d = (ka[i] ?? 0) - (kb[i] ?? 0);
    if (d) return d > 0;
  }
  return false;
}

/** From `pip index versions torch` ("Available versions: 2.14.1, 2.13.0+cpu"), the newest `+cpu` release. */
export function newestCpuBuild(pipIndexOutput: string): string | undefined {
  const line = /^Available versions:\s*(.*)$/m.exec(pipIndexOutput)?.[1];
  if (!line) return undefined;
  let best: string | undefined;
  for (const v of line.split(',').map((s) => s.trim()))
    if (/^\d+(\.\d+)*\+cpu$/.test(v) && (!best || newer(v, best))) best = v;
  return best;
}

/** `<python> -m ...` arguments that list the torch releases the indexes offer. */
export function torchVersionsArgs(plan: TorchPlan): string[] {
  return [
    '-m',
    'pip',
    'index',
    'versions',
    'torch',
    ...(plan.extraIndexUrl ? ['--extra-index-url', plan.extraIndexUrl] : []),
  ];
}

/** `<python> -m ...` arguments that install torch as planned (`pinned`: the release newestCpuBuild found). */
export function torchInstallArgs(plan: TorchPlan, pinned?: string): string[] {
  return [
    '-m',
    'pip',
    'install',
    pinned ? `torch==${pinned}` : 'torch',
    ...(plan.extraIndexUrl ? ['--extra-index-url', plan.extraIndexUrl] : []),
  ];
}
