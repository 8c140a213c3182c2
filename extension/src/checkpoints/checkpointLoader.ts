// Reads a checkpoint folder (config.json + safetensors headers) into a CheckpointModel and
// finds checkpoints under run folders. No vscode import; never throws for bad content.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildCheckpointModel, type CheckpointModel } from './checkpointModel';
import { readCheckpointTensors, readSmallTextFile, type TensorInfo } from './safetensorsHeader';
import { log, why } from '../util/log';

export interface LoadedCheckpoint {
  dir: string;
  model: CheckpointModel;
  tensors: TensorInfo[];
  errors: string[];
  config: unknown;
}

export async function loadCheckpoint(
  dir: string,
  onProgress?: (done: number, total: number) => void,
): Promise<LoadedCheckpoint> {
  const read = await readCheckpointTensors(dir, onProgress);
  const errors = [...read.errors];
  let config: unknown;
  try {
    config = JSON.parse(await readSmallTextFile(path.join(dir, 'config.json')));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    errors.push(code === 'ENOENT' ? 'config.json is missing' : `config.json: ${(e as Error).message}`);
  }
  if (read.files.length === 0 && !errors.some((e) => e.includes('.safetensors')))
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
}

const STEP_DIR = /^step-(\d+)$/;

/** Complete checkpoints of a run: checkpoints/step-N/ folders (temp folders are skipped by name). */
export async function listRunCheckpoints(runDir: string, runId: string): Promise<CheckpointRef[]> {
  const root = path.join(runDir, 'checkpoints');
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fsp.readdir(root, { withFileTypes: true });
  } catch (e) {
    log.trace(`run ${runId} has no checkpoints yet: ${why(e)}`);
    return [];
  }
  let latest: string | undefined;
  try {
    latest = (await readSmallTextFile(path.join(root, 'latest'), 4096)).trim();
  } catch (e) {
    log.trace(`run ${runId} has no checkpoints/latest: ${why(e)}`);
    latest = undefined;
  }
  return entries
    .filter((e) => e.isDirectory() && STEP_DIR.test(e.name))
    .map((e) => ({
      dir: path.join(root, e.name),
      label: e.name,
      runId,
      step: Number(STEP_DIR.exec(e.name)![1]),
      isLatest: e.name === latest,
    }))
    .sort((a, b) => a.step - b.step);
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
