// Reads a checkpoint folder (config.json + safetensors headers) into a CheckpointModel and
// finds checkpoints under run folders. No vscode import; never throws for bad content.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildCheckpointModel, type CheckpointModel } from './checkpointModel';
import { DCP_DIR, readDcpTensors } from './dcpIndex';
import {
  readCheckpointTensors,
  readSmallTextFile,
  type CheckpointTensors,
  type TensorInfo,
} from './safetensorsHeader';
import { log, why } from '../util/log';

export interface LoadedCheckpoint {
  dir: string;
  model: CheckpointModel;
  tensors: TensorInfo[];
  errors: string[];
  config: unknown;
}

/** A sharded training checkpoint (engine: launch/dcp_state.py): dcp/ and no safetensors file. */
async function isDcpCheckpoint(dir: string): Promise<boolean> {
  try {
    const names = await fsp.readdir(dir);
    return names.includes(DCP_DIR) && !names.some((n) => n.endsWith('.safetensors'));
  } catch {
    return false; // readCheckpointTensors reports the unreadable folder
  }
}

async function readDcp(dir: string): Promise<CheckpointTensors & { dcp?: boolean }> {
  try {
    return { dir, files: [], errors: [], ...(await readDcpTensors(dir)), dcp: true };
  } catch (e) {
    return { dir, files: [], tensors: [], errors: [(e as Error).message], bytesOnDisk: 0, dcp: true };
  }
}

export async function loadCheckpoint(
  dir: string,
  onProgress?: (done: number, total: number) => void,
): Promise<LoadedCheckpoint> {
  const read: CheckpointTensors & { dcp?: boolean } = (await isDcpCheckpoint(dir))
    ? await readDcp(dir)
    : await readCheckpointTensors(dir, onProgress);
  const errors = [...read.errors];
  let config: unknown;
  try {
    config = JSON.parse(await readSmallTextFile(path.join(dir, 'config.json')));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    errors.push(code === 'ENOENT' ? 'config.json is missing' : `config.json: ${(e as Error).message}`);
  }
  if (read.files.length === 0 && !read.dcp && !errors.some((e) => e.includes('.safetensors')))
    errors.push('no readable *.safetensors file');
  return {
    dir,
    model: buildCheckpointModel(read.tensors, config, read.bytesOnDisk),
    tensors: read.tensors,
    errors,
    config,
  };
}

export interface CheckpointRef {
  dir: string;
  label: string;
  runId?: string;
  step?: number;
  isLatest?: boolean;
  /** An upcycle run's output (runs/<id>/checkpoint/): its method and parents, as run.json says. */
  upcycled?: { method?: string; parents: string[] };
}

const STEP_DIR = /^step-(\d+)$/;
/** Where an upcycle stage writes its MoE (engine/moelab/train/pipeline.py). */
export const UPCYCLED_DIR = 'checkpoint';

/**
 * Complete checkpoints of a run: the MoE an upcycle run wrote to checkpoint/ once it is whole
 * (config.json and safetensors), then checkpoints/step-N/ folders (temp folders are skipped by
 * name). `run` gives the upcycle's method and parents (its run.json).
 */
export async function listRunCheckpoints(
  runDir: string,
  runId: string,
  run: { method?: unknown; parents?: unknown } = {},
): Promise<CheckpointRef[]> {
  const upcycled = path.join(runDir, UPCYCLED_DIR);
  const out: CheckpointRef[] = [];
  if (await isCheckpointDir(upcycled)) {
    const parents = Array.isArray(run.parents)
      ? run.parents.filter((p): p is string => typeof p === 'string')
      : [];
    const method = typeof run.method === 'string' && run.method ? { method: run.method } : {};
    out.push({ dir: upcycled, label: UPCYCLED_DIR, runId, isLatest: true, upcycled: { ...method, parents } });
  }
  const root = path.join(runDir, 'checkpoints');
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fsp.readdir(root, { withFileTypes: true });
  } catch (e) {
    log.trace(`run ${runId} has no checkpoints yet: ${why(e)}`);
    return out;
  }
  let latest: string | undefined;
  try {
    latest = (await readSmallTextFile(path.join(root, 'latest'), 4096)).trim();
  } catch (e) {
    log.trace(`run ${runId} has no checkpoints/latest: ${why(e)}`);
    latest = undefined;
  }
  const steps = entries
    .filter((e) => e.isDirectory() && STEP_DIR.test(e.name))
    .map((e) => ({
      dir: path.join(root, e.name),
      label: e.name,
      runId,
      step: Number(STEP_DIR.exec(e.name)![1]),
      isLatest: e.name === latest,
    }))
    .sort((a, b) => a.step - b.step);
  // Both kinds in one run is odd; the training's newest checkpoint then stays "latest".
  if (out.length && steps.some((r) => r.isLatest)) out[0].isLatest = false;
  return [...out, ...steps];
}

/** "upcycled · btx · from demo-seed, demo-branch-code, …" for an upcycle's checkpoint. */
export function describeUpcycled(u: NonNullable<CheckpointRef['upcycled']>): string {
  const parts = ['upcycled'];
  if (u.method) parts.push(u.method);
  if (u.parents.length) parts.push(`from ${u.parents.join(', ')}`);
  return parts.join(' · ');
}

/** A folder is a checkpoint when it has config.json and at least one *.safetensors file. */
export async function isCheckpointDir(dir: string): Promise<boolean> {
  try {
    const names = await fsp.readdir(dir);
    return names.includes('config.json') && names.some((n) => n.endsWith('.safetensors'));
  } catch (e) {
    log.trace(`${dir} is not a checkpoint: ${why(e)}`);
    return false;
  }
}
