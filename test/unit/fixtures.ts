// Test fixtures: safetensors files (header + sparse zero data) and run directories.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DTYPE_BITS } from '../../extension/src/checkpoints/safetensorsHeader';
import type { Log } from '../../extension/src/util/log';

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
}

export function tmpDir(prefix = 'moelab-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Builds the header bytes the way the safetensors library does (contiguous spans, padded to 8). */
export function headerBytes(
  tensors: TensorSpec[],
  metadata?: Record<string, string>,
): { header: Buffer; dataSize: number } {
  const json: Record<string, unknown> = {};
  if (metadata) json.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bytes = (t.shape.reduce((a, b) => a * b, 1) * DTYPE_BITS[t.dtype]) / 8;
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let text = JSON.stringify(json);
  text += ' '.repeat((8 - (text.length % 8)) % 8);
  return { header: Buffer.from(text, 'utf8'), dataSize: offset };
}

/** Writes a safetensors file; the data section is a sparse hole, so big shapes cost no disk. */
export function writeSafetensors(
  file: string,
  tensors: TensorSpec[],
  metadata?: Record<string, string>,
): void {
  const { header, dataSize } = headerBytes(tensors, metadata);
  writeRaw(file, header, dataSize);
}

export function writeRaw(
  file: string,
  header: Buffer,
  dataSize: number,
  declaredLength = BigInt(header.length),
): void {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength);
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, header);
    fs.ftruncateSync(fd, 8 + header.length + dataSize);
  } finally {
    fs.closeSync(fd);
  }
}

/** Mixtral-style tensors for L layers, E experts, hidden d, ffn f, vocab v. */
export function mixtralTensors(
  L: number,
  E: number,
  d: number,
  f: number,
  v: number,
  dtype = 'BF16',
): TensorSpec[] {
  const t: TensorSpec[] = [{ name: 'model.embed_tokens.weight', dtype, shape: [v, d] }];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    for (const x of ['q', 'k', 'v', 'o'])
      t.push({ name: `${p}self_attn.${x}_proj.weight`, dtype, shape: [d, d] });
    t.push({ name: `${p}block_sparse_moe.gate.weight`, dtype, shape: [E, d] });
    for (let e = 0; e < E; e++) {
      t.push({ name: `${p}block_sparse_moe.experts.${e}.w1.weight`, dtype, shape: [f, d] });
      t.push({ name: `${p}block_sparse_moe.experts.${e}.w2.weight`, dtype, shape: [d, f] });
      t.push({ name: `${p}block_sparse_moe.experts.${e}.w3.weight`, dtype, shape: [f, d] });
    }
    t.push({ name: `${p}input_layernorm.weight`, dtype, shape: [d] });
    t.push({ name: `${p}post_attention_layernorm.weight`, dtype, shape: [d] });
  }
  t.push({ name: 'model.norm.weight', dtype, shape: [d] }, { name: 'lm_head.weight', dtype, shape: [v, d] });
  return t;
}

/** Writes tensors as N shards plus model.safetensors.index.json, HF style. */
export function writeSharded(dir: string, tensors: TensorSpec[], shards: number, config: unknown): void {
  fs.mkdirSync(dir, { recursive: true });
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(tensors.length / shards);
  for (let s = 0; s < shards; s++) {
    const name = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = tensors.slice(s * per, (s + 1) * per);
    writeSafetensors(path.join(dir, name), part, { format: 'pt' });
    for (const t of part) weightMap[t.name] = name;
  }
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
}

export function writeRun(
  root: string,
  rel: string,
  runJson: Record<string, unknown>,
  metrics: unknown[] = [],
  routing: unknown[] = [],
): string {
  const dir = path.join(root, rel);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify(runJson));
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), metrics.map((m) => JSON.stringify(m) + '\n').join(''));
  if (routing.length)
    fs.writeFileSync(path.join(dir, 'routing.jsonl'), routing.map((m) => JSON.stringify(m) + '\n').join(''));
  return dir;
}

/** A Log that keeps each line as "<level> <message>", for asserting what the host logged. */
export function captureLog(): { lines: string[]; log: Log } {
  const lines: string[] = [];
  const put = (level: string) => (m: unknown) =>
    void lines.push(`${level} ${m instanceof Error ? m.message : String(m)}`);
  return {
    lines,
    log: {
      trace: put('trace'),
      debug: put('debug'),
      info: put('info'),
      warn: put('warn'),
      error: put('error'),
    },
  };
}
