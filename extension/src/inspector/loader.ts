// Opens an export directory: routing.json, the tokenizer beside it, and an onnxruntime-node
// session; every failure is one InspectorError naming the file.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ByteTokenizer } from './byteTokenizer';
import { InspectorError } from './errors';
import { HfTokenizer } from './hfTokenizer';
import { MANIFEST_FILE, parseManifest, type RoutingManifest } from './manifest';
import { OnnxRouterRunner, type SessionOptions } from './onnxRunner';
import type { TextTokenizer } from './tokens';

export interface LoadedExport {
  dir: string;
  manifest: RoutingManifest;
  tokenizer: TextTokenizer;
  runner: OnnxRouterRunner;
  loadMs: number;
}

export async function readManifest(dir: string): Promise<RoutingManifest> {
  const file = path.join(dir, MANIFEST_FILE);
  return parseManifest(await readText(file, 'missing (not an ONNX export: run MoE Lab export first)'), file);
}

export async function loadTokenizer(dir: string, manifest: RoutingManifest): Promise<TextTokenizer> {
  const file = path.join(dir, manifest.tokenizer.file);
  const text = await readText(file, 'tokenizer file missing (re-run MoE Lab export)');
  if (manifest.tokenizer.kind === 'byte-level') return new ByteTokenizer();
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = await fs.readFile(configFile, 'utf8').then(
    (t) => parseJson(t, configFile),
    () => ({}),
  );
  return new HfTokenizer(parseJson(text, file), config, file);
}

export async function loadExport(dir: string, session: SessionOptions = {}): Promise<LoadedExport> {
  const t0 = performance.now();
  const manifest = await readManifest(dir);
  const tokenizer = await loadTokenizer(dir, manifest);
  const runner = await OnnxRouterRunner.create(path.join(dir, manifest.model), manifest, session);
  return { dir, manifest, tokenizer, runner, loadMs: performance.now() - t0 };
}

async function readText(file: string, missing: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InspectorError(
      code === 'ENOENT' ? `${file}: ${missing}` : `${file}: cannot read (${code ?? (e as Error).message})`,
    );
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InspectorError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}
