// Quick picks of the inspector: which model (exports found in the workspace, or a checkpoint to
// export first) and which router to colour by.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { modelChoices, type ExportChoice, type ModelChoice } from './discovery';
import { MANIFEST_FILE } from './manifest';
import type { InspectionResult } from './result';
import { loadSummary, routerLabel, routingRule } from './view';
import { log, why } from '../util/log';

const EXCLUDE = '{**/node_modules/**,**/.git/**,**/.venv/**}';
const MAX_FILES = 500;

export async function findModels(lastUsed?: string): Promise<ModelChoice[]> {
  const [manifests, onnx, configs] = await Promise.all([
    vscode.workspace.findFiles(`**/${MANIFEST_FILE}`, EXCLUDE, MAX_FILES),
    vscode.workspace.findFiles('**/model.onnx', EXCLUDE, MAX_FILES),
    vscode.workspace.findFiles('**/config.json', EXCLUDE, MAX_FILES),
  ]);
  const onnxDirs = new Set(onnx.map((u) => path.dirname(u.fsPath)));
  const exports: ExportChoice[] = [];
  for (const m of manifests) {
    const dir = path.dirname(m.fsPath);
    if (!onnxDirs.has(dir)) continue;
    exports.push({ dir, ...(await manifestSummary(m)) });
  }
  const ckpts: string[] = [];
  for (const c of configs) {
    const dir = path.dirname(c.fsPath);
    if (await hasWeights(dir)) ckpts.push(dir);
  }
  return modelChoices(exports, ckpts, lastUsed);
}

export async function pickModel(choices: ModelChoice[], lastUsed?: string): Promise<ModelChoice | undefined> {
  if (!choices.length) {
    void vscode.window.showInformationMessage(
      'MoE Lab: no ONNX export or checkpoint found in the workspace (looked for routing.json + model.onnx, and config.json + safetensors).',
    );
    return undefined;
  }
  type Item = vscode.QuickPickItem & { choice?: ModelChoice };
  const items: Item[] = [];
  const exports = choices.filter((c) => c.kind === 'export');
  const ckpts = choices.filter((c) => c.kind === 'checkpoint');
  if (exports.length) items.push({ label: 'ONNX exports', kind: vscode.QuickPickItemKind.Separator });
  for (const c of exports) {
    items.push({
      label: `$(circuit-board) ${displayName(c.dir)}`,
      description: [c.modelType, c.method, c.dir === lastUsed ? 'last used' : ''].filter(Boolean).join(' · '),
      detail: vscode.workspace.asRelativePath(c.dir),
      choice: c,
    });
  }
  if (ckpts.length)
    items.push({ label: 'Checkpoints (export to ONNX first)', kind: vscode.QuickPickItemKind.Separator });
  for (const c of ckpts) {
    items.push({
      label: `$(package) ${displayName(c.dir)}`,
      description: 'export to ONNX, then inspect',
      detail: vscode.workspace.asRelativePath(c.dir),
      choice: c,
    });
  }
  const picked = await vscode.window.showQuickPick(items, {
    title: 'MoE Lab: Inspect Routing — model',
    placeHolder: 'Which model routes the selection?',
    matchOnDescription: true,
    matchOnDetail: true,
  });
  return picked?.choice;
}

export async function pickRouter(result: InspectionResult, current: number): Promise<number | undefined> {
  type Item = vscode.QuickPickItem & { index: number };
  const items: Item[] = result.routers.map((r, index) => ({
    label: `${index === current ? '$(check) ' : ''}${routerLabel(r)}`,
    description: routingRule(r),
    detail: `top-expert share: ${loadSummary(result, r)}`,
    index,
  }));
  const picked = await vscode.window.showQuickPick(items, {
    title: 'MoE Lab: colour tokens by the top expert of…',
    matchOnDescription: true,
  });
  return picked?.index;
}

function displayName(dir: string): string {
  // ".../run-1/checkpoints/step-000100/onnx" reads better as "step-000100/onnx".
  return path.join(path.basename(path.dirname(dir)), path.basename(dir));
}

async function manifestSummary(
  uri: vscode.Uri,
): Promise<Omit<ExportChoice, 'kind' | 'dir'> & { kind: 'export' }> {
  try {
    const m = JSON.parse(Buffer.from(await vscode.workspace.fs.readFile(uri)).toString('utf8')) as Record<
      string,
      unknown
    >;
    const s = (k: string) => (typeof m[k] === 'string' ? (m[k] as string) : undefined);
    return {
      kind: 'export',
      modelType: s('model_type'),
      method: s('method'),
      source: s('source_checkpoint'),
    };
  } catch (e) {
    // Listed anyway; opening it reports what is wrong.
    log.debug(`inspector: ${uri.fsPath} is unreadable: ${why(e)}`);
    return { kind: 'export' };
  }
}

async function hasWeights(dir: string): Promise<boolean> {
  try {
    const entries = await vscode.workspace.fs.readDirectory(vscode.Uri.file(dir));
    return entries.some(([name]) => name.endsWith('.safetensors') || name === 'model.safetensors.index.json');
  } catch (e) {
    log.trace(`inspector: ${dir} is not a checkpoint: ${why(e)}`);
    return false;
  }
}
