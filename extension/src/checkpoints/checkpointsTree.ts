// The Checkpoints view: run checkpoints (checkpoints/step-*/) and any workspace folder with
// config.json + *.safetensors; each expands to a summary and layers → groups → tensors,
// read from safetensors headers only.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { RunStore } from '../runs/runStore';
import { runsDirectories } from '../settings';
import {
  type CheckpointRef,
  describeUpcycled,
  isCheckpointDir,
  listRunCheckpoints,
  loadCheckpoint,
  type LoadedCheckpoint,
} from './checkpointLoader';
import {
  describeSummary,
  type ExpertGroup,
  formatBytes,
  formatCount,
  GROUP_LABELS,
  type LayerModel,
  summaryRows,
  type TensorGroup,
  tensorParams,
} from './checkpointModel';
import type { TensorInfo } from './safetensorsHeader';

export type CheckpointNode =
  | { kind: 'runGroup'; runId: string; checkpoints: CheckpointRef[] }
  | { kind: 'checkpoint'; ref: CheckpointRef }
  | { kind: 'summary'; ref: CheckpointRef; loaded: LoadedCheckpoint }
  | { kind: 'row'; id: string; label: string; value: string; tooltip?: string }
  | { kind: 'error'; id: string; message: string }
  | { kind: 'layers'; ref: CheckpointRef; loaded: LoadedCheckpoint }
  | { kind: 'layer'; id: string; layer: LayerModel }
  | { kind: 'group'; id: string; layer: number; group: TensorGroup }
  | { kind: 'expert'; id: string; layer: number; expert: ExpertGroup }
  | { kind: 'outside'; ref: CheckpointRef; tensors: TensorInfo[] }
  | { kind: 'tensor'; id: string; tensor: TensorInfo; prefix: string };

const MAX_WORKSPACE_CHECKPOINTS = 200;
const SEARCH_EXCLUDE = '{**/node_modules/**,**/.git/**,**/.venv/**,**/venv/**,**/site-packages/**}';

export class CheckpointsTreeProvider implements vscode.TreeDataProvider<CheckpointNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<CheckpointNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly cache = new Map<string, Promise<LoadedCheckpoint>>();
  private refs: CheckpointRef[] = [];
  /** The newest listing of the top level that the view asked for (reveal waits for it). */
  private rootListing: Promise<unknown> = Promise.resolve();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly store: RunStore) {
    this.disposables.push(
      this.changed,
      store.onDidChangeRuns(() => this.refresh()),
    );
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }

  /** Debounced: new checkpoints appear in bursts of file events. */
  refresh(dir?: string): void {
    if (dir)
      for (const k of [...this.cache.keys()])
        if (k === dir || k.startsWith(dir + path.sep)) this.cache.delete(k);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.changed.fire(undefined);
    }, 500);
  }

  /** Drops cached headers (the Refresh command). */
  clearCache(): void {
    this.cache.clear();
    this.refresh();
  }

  /** All checkpoints known at the last listing (for quick picks). */
  known(): CheckpointRef[] {
    return this.refs;
  }

  async load(ref: CheckpointRef): Promise<LoadedCheckpoint> {
    let p = this.cache.get(ref.dir);
    if (!p) {
      p = Promise.resolve(
        vscode.window.withProgress(
          { location: { viewId: 'moelab.checkpoints' }, title: `Reading ${ref.label}` },
          (progress) => {
            let last = 0;
            return loadCheckpoint(ref.dir, (done, total) => {
              const pct = (100 * done) / total;
              progress.report({ increment: pct - last, message: `${done}/${total} files` });
              last = pct;
            });
          },
        ),
      );
      this.cache.set(ref.dir, p);
    }
    return p;
  }

  private async listAll(): Promise<CheckpointRef[]> {
    const refs: CheckpointRef[] = [];
    for (const run of this.store.list()) refs.push(...(await listRunCheckpoints(run.dir, run.id, run)));
    const seen = new Set(refs.map((r) => r.dir));
    const roots = runsDirectories();
    const configs = await vscode.workspace.findFiles(
      '**/config.json',
      SEARCH_EXCLUDE,
      MAX_WORKSPACE_CHECKPOINTS,
    );
    for (const uri of configs) {
      const dir = path.dirname(uri.fsPath);
      // Run checkpoints come from the store; the runs folders may also hold half-written temp dirs.
      if (seen.has(dir) || roots.some((r) => dir.startsWith(r + path.sep))) continue;
      if (await isCheckpointDir(dir)) {
        seen.add(dir);
        refs.push({ dir, label: vscode.workspace.asRelativePath(dir) });
      }
    }
    this.refs = refs;
    return refs;
  }

  /**
   * The node of a checkpoint folder, or of a run's newest checkpoint, as listed now (for
   * TreeView.reveal; ids make it the same row as the one on screen).
   */
  async nodeFor(target: { dir?: string; runId?: string }): Promise<CheckpointNode | undefined> {
    const refs = await this.listAll();
    const dir = target.dir ? path.resolve(target.dir) : undefined;
    const ofRun = refs.filter((r) => r.runId !== undefined && r.runId === target.runId);
    const ref = dir
      ? refs.find((r) => r.dir === dir)
      : (ofRun.find((r) => r.isLatest) ?? ofRun[ofRun.length - 1]);
    return ref ? { kind: 'checkpoint', ref } : undefined;
  }

  /** Resolves once the top-level listing in flight (if any) is done. */
  async idle(): Promise<void> {
    await this.rootListing.catch(() => undefined);
  }

  /** Only checkpoints are revealed: a run's sit under its run group, the others at the top. */
  getParent(node: CheckpointNode): CheckpointNode | undefined {
    if (node.kind !== 'checkpoint' || node.ref.runId === undefined) return undefined;
    const runId = node.ref.runId;
    return { kind: 'runGroup', runId, checkpoints: this.refs.filter((r) => r.runId === runId) };
  }

  async getChildren(node?: CheckpointNode): Promise<CheckpointNode[]> {
    if (!node) {
      const listing = this.listAll();
      this.rootListing = listing;
      const refs = await listing;
      const byRun = new Map<string, CheckpointRef[]>();
      const out: CheckpointNode[] = [];
      for (const r of refs) {
        if (r.runId === undefined) out.push({ kind: 'checkpoint', ref: r });
        else byRun.set(r.runId, [...(byRun.get(r.runId) ?? []), r]);
      }
      const groups: CheckpointNode[] = [...byRun.entries()]
        .sort((a, b) => a[0].localeCompare(b[0]))
        .map(([runId, checkpoints]) => ({ kind: 'runGroup', runId, checkpoints }));
      return [...groups, ...out];
    }
    switch (node.kind) {
      case 'runGroup':
        return node.checkpoints.map((ref) => ({ kind: 'checkpoint', ref }));
      case 'checkpoint': {
        const loaded = await this.load(node.ref);
        const items: CheckpointNode[] = loaded.errors.map((message, i) => ({
          kind: 'error',
          id: `${node.ref.dir}#err${i}`,
          message,
        }));
        items.push({ kind: 'summary', ref: node.ref, loaded });
        if (loaded.model.layers.length) items.push({ kind: 'layers', ref: node.ref, loaded });
        if (loaded.model.outside.length)
          items.push({ kind: 'outside', ref: node.ref, tensors: loaded.model.outside });
        return items;
      }
      case 'summary':
        return summaryRows(node.loaded.model.summary).map((r, i) => ({
          kind: 'row',
          id: `${node.ref.dir}#row${i}`,
          ...r,
        }));
      case 'layers':
        return node.loaded.model.layers.map((layer) => ({
          kind: 'layer',
          id: `${node.ref.dir}#L${layer.index}`,
          layer,
        }));
      case 'layer':
        return node.layer.groups.map((group) => ({
          kind: 'group',
          id: `${node.id}/${group.kind}`,
          layer: node.layer.index,
          group,
        }));
      case 'group':
        return [
          ...node.group.tensors.map((tensor) => ({
            kind: 'tensor' as const,
            id: `${node.id}/${tensor.name}`,
            tensor,
            prefix: layerPrefix(tensor.name),
          })),
          ...node.group.experts.map((expert) => ({
            kind: 'expert' as const,
            id: `${node.id}/e${expert.expert}`,
            layer: node.layer,
            expert,
          })),
        ];
      case 'expert':
        return node.expert.tensors.map((tensor) => ({
          kind: 'tensor',
          id: `${node.id}/${tensor.name}`,
          tensor,
          prefix: expertPrefix(tensor.name),
        }));
      case 'outside':
        return node.tensors.map((tensor) => ({
          kind: 'tensor',
          id: `${node.ref.dir}#${tensor.name}`,
          tensor,
          prefix: '',
        }));
      default:
        return [];
    }
  }

  getTreeItem(node: CheckpointNode): vscode.TreeItem {
    const C = vscode.TreeItemCollapsibleState;
    switch (node.kind) {
      case 'runGroup': {
        const item = new vscode.TreeItem(node.runId, C.Collapsed);
        item.id = `ckrun:${node.runId}`;
        const up = node.checkpoints.find((c) => c.upcycled)?.upcycled;
        item.description = up
          ? describeUpcycled(up)
          : `${node.checkpoints.length} checkpoint${node.checkpoints.length === 1 ? '' : 's'}`;
        if (up) item.tooltip = upcycledTooltip(node.runId, up);
        item.iconPath = new vscode.ThemeIcon(up ? 'git-merge' : 'beaker');
        item.contextValue = 'moelab.checkpointRun';
        return item;
      }
      case 'checkpoint': {
        const item = new vscode.TreeItem(node.ref.label, C.Collapsed);
        item.id = `ckpt:${node.ref.dir}`;
        const up = node.ref.upcycled;
        item.description = up ? describeUpcycled(up) : node.ref.isLatest ? 'latest' : undefined;
        item.tooltip = up ? upcycledTooltip(node.ref.runId, up, node.ref.dir) : node.ref.dir;
        item.iconPath = new vscode.ThemeIcon(up ? 'git-merge' : 'database');
        item.contextValue = 'moelab.checkpoint';
        item.resourceUri = vscode.Uri.file(node.ref.dir);
        return item;
      }
      case 'summary': {
        const item = new vscode.TreeItem('Summary', C.Collapsed);
        item.id = `${node.ref.dir}#summary`;
        item.description = describeSummary(node.loaded.model.summary);
        item.iconPath = new vscode.ThemeIcon('info');
        return item;
      }
      case 'row': {
        const item = new vscode.TreeItem(node.label, C.None);
        item.id = node.id;
        item.description = node.value;
        item.tooltip = node.tooltip ?? node.value;
        return item;
      }
      case 'error': {
        const item = new vscode.TreeItem(node.message, C.None);
        item.id = node.id;
        item.tooltip = node.message;
        item.iconPath = new vscode.ThemeIcon('error', new vscode.ThemeColor('errorForeground'));
        item.contextValue = 'moelab.checkpointError';
        return item;
      }
      case 'layers': {
        const item = new vscode.TreeItem('Layers', C.Collapsed);
        item.id = `${node.ref.dir}#layers`;
        item.description = `${node.loaded.model.layers.length}`;
        item.iconPath = new vscode.ThemeIcon('list-tree');
        return item;
      }
      case 'layer': {
        const item = new vscode.TreeItem(`layer ${node.layer.index}`, C.Collapsed);
        item.id = node.id;
        const kinds = node.layer.groups.map((g) => g.kind);
        const moe = kinds.includes('ffnExperts') || kinds.includes('attentionExperts');
        item.description = `${formatCount(node.layer.params)} params${moe ? ' · MoE' : ''}`;
        item.iconPath = new vscode.ThemeIcon(moe ? 'type-hierarchy' : 'symbol-namespace');
        return item;
      }
      case 'group': {
        const item = new vscode.TreeItem(GROUP_LABELS[node.group.kind], C.Collapsed);
        item.id = node.id;
        const e = node.group.experts.length;
        item.description = `${e ? `${e} experts · ` : ''}${formatCount(node.group.params)} params`;
        item.iconPath = new vscode.ThemeIcon(
          node.group.kind.endsWith('Router') ? 'git-compare' : e ? 'organization' : 'symbol-method',
        );
        return item;
      }
      case 'expert': {
        const item = new vscode.TreeItem(`expert ${node.expert.expert}`, C.Collapsed);
        item.id = node.id;
        item.description = `${formatCount(node.expert.params)} params`;
        item.iconPath = new vscode.ThemeIcon('person');
        return item;
      }
      case 'outside': {
        const item = new vscode.TreeItem('Embeddings, final norm, head', C.Collapsed);
        item.id = `${node.ref.dir}#outside`;
        item.description = `${formatCount(node.tensors.reduce((s, t) => s + tensorParams(t), 0))} params`;
        item.iconPath = new vscode.ThemeIcon('symbol-field');
        return item;
      }
      case 'tensor': {
        const t = node.tensor;
        const item = new vscode.TreeItem(t.name.slice(node.prefix.length), C.None);
        item.id = node.id;
        item.description = `${t.dtype} [${t.shape.join(', ')}] · ${formatBytes(t.end - t.begin)}`;
        item.tooltip = `${t.name}\n${t.dtype} [${t.shape.join(', ')}], ${formatCount(tensorParams(t))} params\n${path.basename(t.file)} @ ${t.begin}`;
        item.iconPath = new vscode.ThemeIcon('symbol-array');
        return item;
      }
    }
  }
}

function upcycledTooltip(
  runId: string | undefined,
  up: NonNullable<CheckpointRef['upcycled']>,
  dir?: string,
): vscode.MarkdownString {
  const lines = [`**${runId ?? 'checkpoint'}** — the MoE of an upcycle run`, ''];
  if (up.method) lines.push(`- method: ${up.method}`);
  for (const p of up.parents) lines.push(`- parent: ${p}`);
  if (dir) lines.push('', `\`${dir}\``);
  return new vscode.MarkdownString(lines.join('\n'));
}

function layerPrefix(name: string): string {
  return /^(?:model\.)?layers\.\d+\./.exec(name)?.[0] ?? '';
}

function expertPrefix(name: string): string {
  return /^.*\.experts\.\d+\./.exec(name)?.[0] ?? layerPrefix(name);
}
