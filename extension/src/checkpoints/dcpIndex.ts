// The tensor list of a sharded (DCP) training checkpoint: checkpoints/step-N/dcp/tensors.json, which
// the engine writes beside torch.distributed.checkpoint's own .metadata (a pickle, unreadable here).
// No vscode import. The file may come from anyone: anything malformed is an Error with one line.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DTYPE_BITS, readSmallTextFile, type TensorInfo } from './safetensorsHeader';

export const DCP_DIR = 'dcp';
export const DCP_INDEX = 'tensors.json';

export interface DcpTensors {
  tensors: TensorInfo[];
  bytesOnDisk: number;
}

/** The tensors of `dir`'s dcp/tensors.json, in safetensors names; `file` is the index itself. */
export async function readDcpTensors(dir: string): Promise<DcpTensors> {
  const file = path.join(dir, DCP_DIR, DCP_INDEX);
  let doc: unknown;
  try {
    doc = JSON.parse(await readSmallTextFile(file));
  } catch (e) {
    throw new Error(`${DCP_DIR}/${DCP_INDEX}: ${(e as Error).message}`);
  }
  return { tensors: parseDcpIndex(doc, file), bytesOnDisk: await dirBytes(path.join(dir, DCP_DIR)) };
}

export function parseDcpIndex(doc: unknown, file: string): TensorInfo[] {
  const bad = (why: string) => new Error(`${DCP_DIR}/${DCP_INDEX}: ${why}`);
  if (!isObject(doc) || doc.format !== 'dcp' || !isObject(doc.tensors))
    throw bad('not a DCP tensor index ({"format": "dcp", "tensors": {...}})');
  const out: TensorInfo[] = [];
  for (const [name, t] of Object.entries(doc.tensors)) {
    if (!isObject(t) || typeof t.dtype !== 'string' || !(t.dtype in DTYPE_BITS))
      throw bad(`tensor ${name}: unknown dtype`);
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(`tensor ${name}: shape is not a list of sizes`);
    const bytes = t.bytes;
    const want = (shape.reduce((a: number, d: number) => a * d, 1) * DTYPE_BITS[t.dtype]) / 8;
    if (bytes !== want) throw bad(`tensor ${name}: ${String(bytes)} bytes, its shape and dtype make ${want}`);
    out.push({ name, dtype: t.dtype, shape, begin: 0, end: want, file });
  }
  return out;
}

async function dirBytes(dir: string): Promise<number> {
  const names = await fsp.readdir(dir);
  const sizes = await Promise.all(
    names.map((n) => fsp.stat(path.join(dir, n)).then((s) => (s.isFile() ? s.size : 0))),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
