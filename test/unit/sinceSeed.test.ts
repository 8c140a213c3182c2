// The "since the seed" offsets of the dashboard (extension/src/runs/sinceSeed.ts) on run lists
// shaped as the pipeline writes them (engine/moelab/train/pipeline.py: parents are run ids, the
// checkpoint used is in config.init / config.seed / config.experts) and as a user writes them
// (parents given as checkpoint paths).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MetricRecord, RunInfo, RunStage } from '../../extension/src/runs/model';
import {
  progressAt,
  resolveParents,
  seedOffsets,
  splitCheckpointPath,
} from '../../extension/src/runs/sinceSeed';

const ROOT = '/w/runs/demo';
const ckpt = (id: string, step: number): string =>
  `${ROOT}/${id}/checkpoints/step-${String(step).padStart(6, '0')}`;

/** Training records every 10 steps: 1000 tokens and 7e9 FLOPs a step, counted from the run's own start. */
function training(steps: number, every = 10): MetricRecord[] {
  const out: MetricRecord[] = [];
  for (let s = every; s <= steps; s += every)
    out.push({ step: s, tokens: s * 1000, flops: s * 7e9, split: 'train', loss: 3 });
  return out;
}

function run(
  id: string,
  stage: RunStage,
  parents: string[] = [],
  config: Record<string, unknown> = {},
): RunInfo {
  return { id, dir: `${ROOT}/${id}`, stage, parents, config, status: 'done' };
}

/** seed → 2 branches (from the seed's step 60) → BTX upcycle of seed + branches → MoE, plus an eval. */
function btx(): { runs: RunInfo[]; metrics: Map<string, MetricRecord[]> } {
  const runs = [
    run('demo-seed', 'dense'),
    run('demo-branch-code', 'branch', ['demo-seed'], { init: ckpt('demo-seed', 60) }),
    // Relative paths, as a config beside the runs folder writes them.
    run('demo-branch-math', 'branch', ['demo-seed'], { init: 'runs/demo/demo-seed/checkpoints/step-000060' }),
    run('demo-upcycle-btx', 'upcycle', ['demo-seed', 'demo-branch-code', 'demo-branch-math'], {
      seed: ckpt('demo-seed', 60),
      experts: [ckpt('demo-branch-code', 50), ckpt('demo-branch-math', 80)],
    }),
    run('demo-moe-btx', 'moe', ['demo-upcycle-btx'], { init: `${ROOT}/demo-upcycle-btx/checkpoint` }),
    run('demo-eval', 'eval', ['demo-seed'], { checkpoints: {} }),
  ];
  const metrics = new Map<string, MetricRecord[]>([
    ['demo-seed', training(100)],
    ['demo-branch-code', training(50)],
    ['demo-branch-math', training(80)],
    ['demo-moe-btx', training(30)],
  ]);
  return { runs, metrics };
}

const offsets = (runs: RunInfo[], metrics: Map<string, MetricRecord[]>) =>
  seedOffsets(runs, (id) => metrics.get(id) ?? []);

describe('since the seed', () => {
  it('reads the step of a checkpoint path and the run folder it belongs to', () => {
    assert.deepEqual(splitCheckpointPath('/a/runs/x/checkpoints/step-000120/'), {
      dir: '/a/runs/x',
      step: 120,
    });
    assert.deepEqual(splitCheckpointPath('C:\\runs\\x\\checkpoint'), { dir: 'C:/runs/x' });
    assert.deepEqual(splitCheckpointPath('./runs/x/checkpoints/latest'), { dir: 'runs/x' });
    assert.deepEqual(splitCheckpointPath('runs/x'), { dir: 'runs/x' });
  });

  it('places a BTX pipeline as one tree: branches after the seed checkpoint, the merge after its longest branch', () => {
    const { runs, metrics } = btx();
    const o = offsets(runs, metrics);
    const at = (id: string) => o.get(id);
    assert.deepEqual(at('demo-seed'), { tokens: 0, flops: 0, missing: [] });
    // Both branches start from the seed's step 60, not its end (step 100).
    assert.deepEqual(at('demo-branch-code'), { tokens: 60_000, flops: 60 * 7e9, missing: [] });
    assert.deepEqual(at('demo-branch-math'), { tokens: 60_000, flops: 60 * 7e9, missing: [] });
    // Tokens: the timeline (seed 60k, then the longer branch, 80k). FLOPs: all the compute (seed
    // to step 60 once, plus both branches).
    assert.equal(at('demo-upcycle-btx')?.tokens, 60_000 + 80_000);
    assert.equal(at('demo-upcycle-btx')?.flops, (60 + 50 + 80) * 7e9);
    // The upcycle trains nothing: the MoE starts where it does.
    assert.deepEqual(at('demo-moe-btx'), { tokens: 140_000, flops: 190 * 7e9, missing: [] });
    // An eval names the seed without a checkpoint step: after the seed's end.
    assert.equal(at('demo-eval')?.tokens, 100_000);
  });

  it('counts an ancestor used at two checkpoints once, up to the furthest one', () => {
    const { runs, metrics } = btx();
    // The math branch started from the seed's end instead: the seed's compute is counted to step 100.
    runs[2] = run('demo-branch-math', 'branch', ['demo-seed'], { init: ckpt('demo-seed', 100) });
    const o = offsets(runs, metrics);
    assert.equal(o.get('demo-upcycle-btx')?.flops, (100 + 50 + 80) * 7e9);
    assert.equal(o.get('demo-upcycle-btx')?.tokens, Math.max(60_000 + 50_000, 100_000 + 80_000));
  });

  it('takes a resumed parent’s tokens from its current curve', () => {
    // The seed ran to step 100, resumed from its step-40 checkpoint with a bigger batch, and re-logged.
    const seed: MetricRecord[] = [
      ...training(100),
      ...[50, 60, 70].map((s): MetricRecord => ({
        step: s,
        tokens: 40_000 + (s - 40) * 3000,
        flops: s * 1e10,
        split: 'train',
      })),
    ];
    const r = run('seed', 'dense');
    assert.deepEqual(progressAt(r, seed, 60), { tokens: 100_000, flops: 60e10 });
    // Before the resume point the first pass is the curve.
    assert.deepEqual(progressAt(r, seed, 30), { tokens: 30_000, flops: 30 * 7e9 });
    // Its end is where the resumed run is now, not the abandoned step 100.
    assert.equal(progressAt(r, seed).tokens, 130_000);
  });

  it('resolves parents given as checkpoint paths, relative or absolute', () => {
    const { runs, metrics } = btx();
    const child = run('mine', 'branch', ['runs/demo/demo-branch-code/checkpoints/step-000030']);
    const all = [...runs, child];
    const { links, missing } = resolveParents(child, all);
    assert.deepEqual(
      links.map((l) => [l.run.id, l.step]),
      [['demo-branch-code', 30]],
    );
    assert.deepEqual(missing, []);
    assert.deepEqual(offsets(all, metrics).get('mine'), {
      tokens: 60_000 + 30_000,
      flops: 90 * 7e9,
      missing: [],
    });
  });

  it('starts a run whose parent is unknown at that parent’s side as 0, and says which', () => {
    const { runs, metrics } = btx();
    runs[1] = run('demo-branch-code', 'branch', ['demo-seed-deleted'], {
      init: '/elsewhere/seed/checkpoints/step-000060',
    });
    const o = offsets(runs, metrics);
    assert.deepEqual(o.get('demo-branch-code'), { tokens: 0, flops: 0, missing: ['demo-seed-deleted'] });
    // The merge still places itself after the known math branch, and carries the missing ancestor.
    assert.equal(o.get('demo-upcycle-btx')?.tokens, 140_000);
    assert.equal(o.get('demo-upcycle-btx')?.flops, (60 + 50 + 80) * 7e9);
    assert.deepEqual(o.get('demo-moe-btx')?.missing, ['demo-seed-deleted']);
  });

  it('survives a cycle in run.json without looping', () => {
    const a = run('a', 'branch', ['b']);
    const b = run('b', 'branch', ['a']);
    const o = seedOffsets([a, b], () => training(20));
    assert.ok(o.get('a') && o.get('b'));
    assert.ok([...o.values()].some((v) => v.missing.length > 0));
  });

  it('falls back to tokens × flops_per_token for runs that predate the FLOPs field', () => {
    const r: RunInfo = { ...run('old', 'dense'), flops_per_token: 6e6 };
    assert.deepEqual(progressAt(r, [{ step: 10, tokens: 5000, split: 'train', loss: 2 }]), {
      tokens: 5000,
      flops: 5000 * 6e6,
    });
  });
});
