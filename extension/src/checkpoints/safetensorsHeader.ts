// Reads and validates safetensors headers without touching tensor data.
// No vscode import: the unit tests and the bench run this in plain node.
// A checkpoint folder can hold files from anyone, so every check here assumes a hostile file:
// the worst outcome must be a SafetensorsError, never an exception of another kind, a huge
// allocation or a hang.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Bits per element; sub-byte types exist (F4, F6) so bytes alone would not do. */
export const DTYPE_BITS: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
});

/** Headers are JSON; real ones are a few MB at most. Anything bigger is refused, not parsed. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const HEADER_READ_CONCURRENCY = 8;

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte offsets relative to the start of the data section (after the header). */
  begin: number;
  end: number;
  /** Absolute path of the safetensors file holding the tensor. */
  file: string;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  headerLength: number;
  metadata: Record<string, string>;
  tensors: TensorInfo[];
}

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${path.basename(file)}: ${message}`);
    this.name = 'SafetensorsError';
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a header already read from disk. `dataSize` is the size of the data section
 * (file size − 8 − header length); offsets must stay inside it.
 */
export function parseHeaderJson(
  bytes: Uint8Array,
  dataSize: number,
  file: string,
): Omit<SafetensorsHeader, 'fileSize' | 'headerLength'> {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new SafetensorsError(file, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new SafetensorsError(file, 'header does not start with "{"');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError(file, 'header is not a JSON object');

  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(value)) throw new SafetensorsError(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw new SafetensorsError(file, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    tensors.push(validateTensor(name, value, dataSize, file));
  }

  const bySpan = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < bySpan.length; i++) {
    const prev = bySpan[i - 1];
    const cur = bySpan[i];
    if (cur.begin < prev.end) {
      throw new SafetensorsError(file, `tensors ${prev.name} and ${cur.name} overlap`);
    }
  }
  return { file, metadata, tensors };
}

function validateTensor(name: string, value: unknown, dataSize: number, file: string): TensorInfo {
  if (!isPlainObject(value)) throw new SafetensorsError(file, `tensor ${name}: entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BITS, dtype)) {
    throw new SafetensorsError(file, `tensor ${name}: unknown dtype ${JSON.stringify(dtype)?.slice(0, 40)}`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    throw new SafetensorsError(file, `tensor ${name}: shape must be a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
    throw new SafetensorsError(file, `tensor ${name}: data_offsets must be two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw new SafetensorsError(file, `tensor ${name}: data_offsets begin > end`);
  if (end > dataSize) {
    throw new SafetensorsError(
      file,
      `tensor ${name}: data_offsets end ${end} is past the data section (${dataSize} bytes)`,
    );
  }
  // BigInt: a hostile shape like [2^40, 2^40] must not silently round and "match".
  let elements = 1n;
  for (const d of shape as number[]) elements *= BigInt(d);
  const bits = elements * BigInt(DTYPE_BITS[dtype]);
  if (bits % 8n !== 0n)
    throw new SafetensorsError(file, `tensor ${name}: ${dtype} element count does not fill whole bytes`);
  if (bits / 8n !== BigInt(end - begin)) {
    throw new SafetensorsError(
      file,
      `tensor ${name}: shape [${(shape as number[]).join(', ')}] × ${dtype} is ${bits / 8n} bytes but data_offsets span ${end - begin}`,
    );
  }
  return { name, dtype, shape: shape as number[], begin, end, file };
}

/** Reads the 8-byte length and the header only, never the tensor data. */
export async function readSafetensorsHeader(
  file: string,
  maxHeaderBytes = MAX_HEADER_BYTES,
): Promise<SafetensorsHeader> {
  // Stat before open: opening a FIFO named *.safetensors would block a libuv thread forever.
  try {
    if (!(await fsp.stat(file)).isFile()) throw new SafetensorsError(file, 'not a regular file');
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(
      file,
      `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (e) {
    throw new SafetensorsError(
      file,
      `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new SafetensorsError(file, 'not a regular file');
    const fileSize = st.size;
    if (fileSize < 8) throw new SafetensorsError(file, `file is ${fileSize} bytes, too small for a header`);
    const lenBuf = Buffer.alloc(8);
    await readExactly(fh, lenBuf, 0, file);
    const len = lenBuf.readBigUInt64LE(0);
    if (len > BigInt(fileSize - 8))
      throw new SafetensorsError(file, `header length ${len} exceeds the file size`);
    if (len > BigInt(maxHeaderBytes))
      throw new SafetensorsError(file, `header length ${len} exceeds the ${maxHeaderBytes}-byte limit`);
    const headerLength = Number(len);
    const header = Buffer.alloc(headerLength);
    await readExactly(fh, header, 8, file);
    const parsed = parseHeaderJson(header, fileSize - 8 - headerLength, file);
    return { ...parsed, fileSize, headerLength };
  } finally {
    await fh.close();
  }
}

async function readExactly(fh: fsp.FileHandle, buf: Buffer, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0)
      throw new SafetensorsError(file, 'file ended inside the header (was it truncated while reading?)');
    done += bytesRead;
  }
}

export interface ShardIndex {
  metadata: Record<string, unknown>;
  /** tensor name → shard file name (relative to the index). */
  weightMap: Record<string, string>;
}

/** Parses model.safetensors.index.json; shard names must stay inside the checkpoint folder. */
export function parseShardIndex(text: string, file: string): ShardIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(file, `index is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json) || !isPlainObject(json.weight_map))
    throw new SafetensorsError(file, 'index has no weight_map object');
  const weightMap: Record<string, string> = {};
  for (const [k, v] of Object.entries(json.weight_map)) {
    if (typeof v !== 'string' || v.length === 0 || path.isAbsolute(v) || v.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError(file, `weight_map[${k}] is not a shard file name inside the folder`);
    }
    weightMap[k] = v;
  }
  return { metadata: isPlainObject(json.metadata) ? json.metadata : {}, weightMap };
}

export interface CheckpointTensors {
  dir: string;
  files: SafetensorsHeader[];
  tensors: TensorInfo[];
  /** Problems that did not stop the listing (one bad shard, a tensor missing from its shard…). */
  errors: string[];
  bytesOnDisk: number;
}

/**
 * Lists every tensor of a checkpoint folder: sharded (index.json) or plain *.safetensors files.
 * Never throws for bad content; errors are collected so the tree can show them as items.
 */
export async function readCheckpointTensors(
  dir: string,
  onProgress?: (done: number, total: number) => void,
): Promise<CheckpointTensors> {
  const errors: string[] = [];
  let entries: string[];
  try {
    entries = await fsp.readdir(dir);
  } catch (e) {
    return {
      dir,
      files: [],
      tensors: [],
      errors: [`cannot read folder (${(e as Error).message})`],
      bytesOnDisk: 0,
    };
  }
  let shardNames = entries.filter((n) => n.endsWith('.safetensors')).sort();
  let index: ShardIndex | undefined;
  const indexName = entries.find((n) => n.endsWith('.safetensors.index.json'));
  if (indexName) {
    const indexFile = path.join(dir, indexName);
    try {
      index = parseShardIndex(await readSmallTextFile(indexFile), indexFile);
      const listed = [...new Set(Object.values(index.weightMap))].sort();
      const missing = listed.filter((n) => !shardNames.includes(n));
      for (const m of missing) errors.push(`${indexName}: shard ${m} is missing`);
      shardNames = listed.filter((n) => shardNames.includes(n));
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  // A few reads in flight: shards often sit on network file systems (Remote-SSH, cluster storage),
  // where latency, not bandwidth, dominates.
  const results: (SafetensorsHeader | undefined)[] = new Array(shardNames.length);
  const problems: (string | undefined)[] = new Array(shardNames.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < shardNames.length) {
      const i = next++;
      try {
        results[i] = await readSafetensorsHeader(path.join(dir, shardNames[i]));
      } catch (e) {
        problems[i] = e instanceof SafetensorsError ? e.message : `${shardNames[i]}: ${(e as Error).message}`;
      }
      onProgress?.(++done, shardNames.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(HEADER_READ_CONCURRENCY, shardNames.length) }, worker));
  const files = results.filter((r): r is SafetensorsHeader => r !== undefined);
  for (const p of problems) if (p) errors.push(p);
  const tensors = files.flatMap((f) => f.tensors);
  if (index) {
    const where = new Map(tensors.map((t) => [t.name, path.basename(t.file)]));
    for (const [name, shard] of Object.entries(index.weightMap)) {
      const actual = where.get(name);
      if (actual === undefined) {
        if (shardNames.includes(shard))
          errors.push(`${name}: listed in ${shard} by the index but not found there`);
      } else if (actual !== shard) {
        errors.push(`${name}: index says ${shard} but it is in ${actual}`);
      }
    }
  }
  const bytesOnDisk = files.reduce((s, f) => s + f.fileSize, 0);
  return { dir, files, tensors, errors, bytesOnDisk };
}

/** readFile for JSON side files: refuses non-regular files (FIFOs block) and absurd sizes. */
export async function readSmallTextFile(file: string, maxBytes = 64 * 1024 * 1024): Promise<string> {
  const st = await fsp.stat(file);
  if (!st.isFile()) throw new Error(`${path.basename(file)} is not a regular file`);
  if (st.size > maxBytes)
    throw new Error(`${path.basename(file)} is ${st.size} bytes, more than ${maxBytes}`);
  return fsp.readFile(file, 'utf8');
}
