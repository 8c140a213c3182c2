// Pure shape of the Runs view: experiments → stages → runs, with the labels, descriptions and
// icons each item shows. runsTree.ts only maps these to vscode.TreeItems. No vscode import.
import { formatCount } from '../checkpoints/checkpointModel';
import { type SlurmJobState, slurmLabel } from '../jobs/slurmArgs';
import type { MetricRecord, RunInfo, ShownStatus } from './model';
import { totalSteps } from './records';
import { shownStatus } from './runStore';

export interface RunNode {
  kind: 'run';
  key: string;
  run: RunInfo;
  status: ShownStatus;
  label: string;
  description: string;
  tooltip: string;
  icon: { id: string; color?: string };
}

export interface StageNode {
  kind: 'stage';
  key: string;
  label: string;
  description: string;
  children: RunNode[];
}

export interface ExperimentNode {
  kind: 'experiment';
  key: string;
  label: string;
  description: string;
  children: StageNode[];
}

export type RunsTreeNode = ExperimentNode | StageNode | RunNode;

const STAGE_ORDER = ['dense', 'branch', 'upcycle', 'moe', 'eval'];

/** Codicon and theme colour per shown status. */
export const STATUS_ICONS: Readonly<Record<ShownStatus, { id: string; color?: string }>> = {
  queued: { id: 'clock' },
  running: { id: 'sync~spin', color: 'charts.blue' },
  done: { id: 'pass', color: 'testing.iconPassed' },
  failed: { id: 'error', color: 'testing.iconFailed' },
  stopped: { id: 'debug-stop', color: 'disabledForeground' },
  diverged: { id: 'warning', color: 'problemsWarningIcon.foreground' },
  stale: { id: 'question', color: 'problemsWarningIcon.foreground' },
};

export function statusLabel(status: ShownStatus): string {
  return status === 'stale' ? 'stale/failed?' : status;
}

function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3);
}

/** "step 120/400 · loss 2.310 · 1.2K tok/s" — what a glance at the sidebar should tell. */
export function runDescription(
  run: RunInfo,
  latest: MetricRecord | undefined,
  slurm?: SlurmJobState,
): string {
  const status = shownStatus(run);
  const parts: string[] = [];
  // While Slurm has the job, its word ("queued (slurm 1234)") beats run.json's; once the job is
  // gone run.json says done/failed. A job that ended before the trainer wrote run.json (cancelled,
  // failed to start) still says so, since run.json then keeps "queued".
  if (slurm && (slurm.active || status === 'queued')) parts.push(slurmLabel(slurm));
  else if (status !== 'done' && status !== 'running') parts.push(statusLabel(status));
  if (latest) {
    const total = totalSteps(run);
    parts.push(total ? `step ${latest.step}/${total}` : `step ${latest.step}`);
    if (typeof latest.loss === 'number') parts.push(`loss ${fmtNum(latest.loss)}`);
    if (status === 'running' && typeof latest.tokens_per_s === 'number')
      parts.push(`${formatCount(latest.tokens_per_s)} tok/s`);
  }
  if (run.method && run.stage !== 'dense') parts.push(String(run.method));
  return parts.join(' · ');
}

export function runTooltip(
  run: RunInfo,
  latest: MetricRecord | undefined,
  bad?: { metrics: number; routing: number },
  slurm?: SlurmJobState,
): string {
  const status = shownStatus(run);
  const lines = [`**${run.id}** — ${statusLabel(status)}`, ''];
  const row = (k: string, v: unknown) => {
    if (v !== undefined && v !== null && v !== '') lines.push(`- ${k}: ${String(v)}`);
  };
  row('stage', run.stage);
  row('method', run.method);
  row('experiment', run.experiment);
  if (run.parents?.length) row('parents', run.parents.join(', '));
  row('started', run.started);
  row('ended', run.ended);
  row('host', run.host);
  row('pid', run.pid);
  if (slurm) {
    row('Slurm job', `${slurm.jobId}: ${slurm.state}${slurm.reason ? ` (${slurm.reason})` : ''}`);
    row('Slurm nodes', slurm.nodes);
    row('Slurm log', slurm.log);
  }
  if (latest) {
    row('step', latest.step);
    row('tokens', latest.tokens);
    if (typeof latest.flops === 'number') row('training FLOPs', latest.flops.toExponential(2));
    row('loss', latest.loss);
    row('lr', latest.lr);
    row('tokens/s', latest.tokens_per_s);
  }
  if (typeof run.error === 'string') row('error', run.error);
  if (status === 'stale') lines.push('', 'run.json says running, but its process is gone on this host.');
  if (bad && (bad.metrics || bad.routing))
    lines.push('', `Skipped unreadable lines: metrics ${bad.metrics}, routing ${bad.routing}`);
  lines.push('', `\`${run.dir}\``);
  return lines.join('\n');
}

function countStatuses(runs: RunNode[]): string {
  const counts = new Map<ShownStatus, number>();
  for (const r of runs) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  const order: ShownStatus[] = ['running', 'queued', 'failed', 'diverged', 'stale', 'stopped', 'done'];
  return order
    .filter((s) => counts.has(s))
    .map((s) => `${counts.get(s)} ${statusLabel(s)}`)
    .join(', ');
}

export function buildRunsTree(
  runs: readonly RunInfo[],
  latest: (runId: string) => MetricRecord | undefined,
  badLines?: (runId: string) => { metrics: number; routing: number },
  slurm?: (runDir: string) => SlurmJobState | undefined,
): ExperimentNode[] {
  const groups = new Map<string, Map<string, RunNode[]>>();
  for (const run of runs) {
    const group = run.group ?? run.experiment ?? 'runs';
    const stage = run.stage ? String(run.stage) : 'other';
    const last = latest(run.id);
    const status = shownStatus(run);
    const job = slurm?.(run.dir);
    const node: RunNode = {
      kind: 'run',
      key: `run:${run.dir}`,
      run,
      status,
      label: run.id,
      description: runDescription(run, last, job),
      tooltip: runTooltip(run, last, badLines?.(run.id), job),
      icon: STATUS_ICONS[status],
    };
    let stages = groups.get(group);
    if (!stages) groups.set(group, (stages = new Map()));
    const list = stages.get(stage) ?? [];
    list.push(node);
    stages.set(stage, list);
  }
  const stageRank = (s: string) => {
    const i = STAGE_ORDER.indexOf(s);
    return i < 0 ? STAGE_ORDER.length : i;
  };
  return [...groups.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([group, stages]) => {
      const stageNodes: StageNode[] = [...stages.entries()]
        .sort((a, b) => stageRank(a[0]) - stageRank(b[0]) || a[0].localeCompare(b[0]))
        .map(([stage, nodes]) => {
          nodes.sort(
            (a, b) =>
              String(a.run.started ?? '').localeCompare(String(b.run.started ?? '')) ||
              a.label.localeCompare(b.label),
          );
          return {
            kind: 'stage',
            key: `stage:${group}/${stage}`,
            label: stage,
            description: countStatuses(nodes),
            children: nodes,
          };
        });
      const all = stageNodes.flatMap((s) => s.children);
      return {
        kind: 'experiment',
        key: `exp:${group}`,
        label: group,
        description: countStatuses(all),
        children: stageNodes,
      };
    });
}
