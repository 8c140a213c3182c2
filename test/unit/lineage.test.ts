import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkpointRefsFrom, lineageRunId, runIdsFrom } from '../../extension/src/commands/commandArgs';
import { buildLineage, type LineageRunNode } from '../../extension/src/runs/lineage';
import type { RunInfo } from '../../extension/src/runs/model';
import { demoRuns } from './demoRuns';

const ROOT = '/w/runs';

/** The parents `moelab demo --quick` writes (engine/moelab/train/pipeline.py), and the upcycles' checkpoints. */
function demoWithParents(): RunInfo[] {
  const branches = ['demo-branch-code', 'demo-branch-math', 'demo-branch-prose'];
  return demoRuns(ROOT).map((r) => {
    const ckpt = (id: string, step: number) =>
      `${ROOT}/${id}/checkpoints/step-${String(step).padStart(6, '0')}`;
    if (r.stage === 'branch' || r.stage === 'eval') return { ...r, parents: ['demo-seed'] };
    if (r.stage === 'moe')
      return { ...r, parents: [r.id.replace('demo-moe-', 'demo-upcycle-').replace(/-compute$/, '')] };
    if (r.stage !== 'upcycle') return { ...r, parents: [] };
    if (r.method === 'upit')
      return {
        ...r,
        parents: ['demo-seed', 'demo-tune'],
        config: { seed: ckpt('demo-seed', 60), experts: [5, 10, 15].map((s) => ckpt('demo-tune', s)) },
      };
    return {
      ...r,
      parents: ['demo-seed', ...branches],
      config: { seed: ckpt('demo-seed', 60), experts: branches.map((b) => ckpt(b, 15)) },
    };
  });
}

function find(nodes: LineageRunNode[], id: string): LineageRunNode | undefined {
  for (const n of nodes) {
    if (n.run.id === id) return n;
    const hit = find(n.children, id);
    if (hit) return hit;
  }
  return undefined;
}

function count(nodes: LineageRunNode[]): number {
  return nodes.reduce((s, n) => s + 1 + count(n.children), 0);
}

describe('run lineage', () => {
  it('draws the BTX demo as seed → branches → upcycle → MoE, each run once', () => {
    const runs = demoWithParents();
    const roots = buildLineage(runs);
    assert.deepEqual(
      roots.map((r) => r.label),
      ['demo-seed'],
    );
    assert.equal(count(roots), runs.length);
    const seed = roots[0];
    const kids = seed.children.map((c) => `${c.run.stage}:${c.label}`);
    // Stage order under the seed: branches (start order), upcycles, then the eval run.
    assert.deepEqual(kids.slice(0, 5), [
      'branch:demo-branch-code',
      'branch:demo-branch-math',
      'branch:demo-branch-prose',
      'branch:demo-tune',
      'branch:demo-dense-continued',
    ]);
    assert.equal(kids.at(-1), 'eval:demo-eval');
    const btx = find(roots, 'demo-upcycle-btx')!;
    assert.equal(btx.parentId, 'demo-seed');
    assert.deepEqual(btx.otherParents, ['demo-branch-code', 'demo-branch-math', 'demo-branch-prose']);
    assert.match(
      btx.description,
      /^upcycle · btx · also from demo-branch-code, demo-branch-math, demo-branch-prose$/,
    );
    assert.deepEqual(
      btx.children.map((c) => c.label),
      ['demo-moe-btx', 'demo-moe-btx-compute'],
    );
    assert.deepEqual(
      btx.inputs?.children.map((c) => [c.role, c.runId, c.label]),
      [
        ['seed', 'demo-seed', 'demo-seed / checkpoints/step-000060'],
        ['expert', 'demo-branch-code', 'demo-branch-code / checkpoints/step-000015'],
        ['expert', 'demo-branch-math', 'demo-branch-math / checkpoints/step-000015'],
        ['expert', 'demo-branch-prose', 'demo-branch-prose / checkpoints/step-000015'],
      ],
    );
    // UpIT: from the tune run's checkpoints, each listed.
    const upit = find(roots, 'demo-upcycle-upit')!;
    assert.deepEqual(upit.otherParents, ['demo-tune']);
    assert.deepEqual(
      upit.inputs?.children.filter((c) => c.role === 'expert').map((c) => c.label),
      [5, 10, 15].map((s) => `demo-tune / checkpoints/step-${String(s).padStart(6, '0')}`),
    );
    assert.equal(find(roots, 'demo-moe-upit')?.parentId, 'demo-upcycle-upit');
    // A plain training run has one parent checkpoint: no "mixed from" group.
    assert.equal(find(roots, 'demo-branch-code')?.inputs, undefined);
  });

  it('maps parents given as checkpoint paths to the runs that hold them', () => {
    const runs: RunInfo[] = [
      { id: 'seed', dir: '/w/runs/seed', stage: 'dense', status: 'done', parents: [] },
      {
        id: 'ft',
        dir: '/w/runs/ft',
        stage: 'branch',
        status: 'done',
        parents: ['/w/runs/seed/checkpoints/step-000100'],
      },
      {
        id: 'up',
        dir: '/w/runs/up',
        stage: 'upcycle',
        status: 'done',
        parents: ['seed/checkpoints/step-000100', './ft'],
      },
      { id: 'moe', dir: '/w/runs/moe', stage: 'moe', status: 'running', parents: ['/w/runs/up/checkpoint'] },
    ];
    const roots = buildLineage(runs);
    assert.deepEqual(
      roots.map((r) => r.label),
      ['seed'],
    );
    assert.equal(find(roots, 'ft')?.parentId, 'seed');
    assert.equal(find(roots, 'up')?.parentId, 'seed');
    assert.deepEqual(find(roots, 'up')?.otherParents, ['ft']);
    assert.equal(find(roots, 'moe')?.parentId, 'up');
    assert.match(find(roots, 'moe')!.description, /^moe · running$/);
  });

  it('prefers the parent id in the run’s own runs folder when two folders hold that id', () => {
    const runs: RunInfo[] = [
      { id: 'seed', dir: '/w/a/seed', stage: 'dense', status: 'done' },
      { id: 'b/seed', dir: '/w/b/seed', stage: 'dense', status: 'done' },
      { id: 'child', dir: '/w/b/child', stage: 'branch', status: 'done', parents: ['seed'] },
    ];
    assert.equal(find(buildLineage(runs), 'child')?.parentId, 'b/seed');
  });

  it('keeps a run whose parent run is missing at the top level and says which parent', () => {
    const runs: RunInfo[] = [
      { id: 'moe', dir: '/w/runs/moe', stage: 'moe', status: 'done', parents: ['gone-upcycle'] },
      { id: 'seed', dir: '/w/runs/seed', stage: 'dense', status: 'done' },
      { id: 'up', dir: '/w/runs/up', stage: 'upcycle', status: 'done', parents: ['seed', '/elsewhere/ckpt'] },
    ];
    const roots = buildLineage(runs);
    assert.deepEqual(roots.map((r) => r.label).sort(), ['moe', 'seed']);
    const moe = roots.find((r) => r.label === 'moe')!;
    assert.deepEqual(moe.missingParents, ['gone-upcycle']);
    assert.match(moe.description, /parent not found: gone-upcycle/);
    assert.match(moe.tooltip, /not found among the runs: gone-upcycle/);
    const up = find(roots, 'up')!;
    assert.equal(up.parentId, 'seed');
    assert.deepEqual(up.missingParents, ['/elsewhere/ckpt']);
  });

  it('breaks loops of parents and shows every run once', () => {
    const runs: RunInfo[] = [
      { id: 'a', dir: '/w/runs/a', stage: 'branch', status: 'done', parents: ['c'] },
      { id: 'b', dir: '/w/runs/b', stage: 'branch', status: 'done', parents: ['a'] },
      { id: 'c', dir: '/w/runs/c', stage: 'branch', status: 'done', parents: ['b'] },
      { id: 'd', dir: '/w/runs/d', stage: 'moe', status: 'done', parents: ['c'] },
      { id: 'self', dir: '/w/runs/self', stage: 'dense', status: 'done', parents: ['self'] },
    ];
    const roots = buildLineage(runs);
    assert.equal(count(roots), runs.length);
    const loopRoots = roots.filter((r) => r.cycle);
    assert.equal(loopRoots.length, 1);
    assert.match(loopRoots[0].description, /parents loop back to it/);
    // A run naming itself is a root, not a loop: that parent names no other run.
    const self = roots.find((r) => r.label === 'self')!;
    assert.equal(self.cycle, false);
    assert.deepEqual(self.missingParents, ['self']);
    assert.deepEqual(self.children, []);
    assert.equal(find(roots, 'd')?.parentId, 'c');
  });

  it('builds 100 runs (seeds, branches, upcycles, MoEs) well within a view’s first paint', () => {
    const runs: RunInfo[] = [];
    for (let s = 0; s < 5; s++) {
      const seed = `s${s}-seed`;
      runs.push({ id: seed, dir: `/w/runs/${seed}`, stage: 'dense', status: 'done', parents: [] });
      const branches = [0, 1, 2, 3, 4, 5].map((b) => `s${s}-branch-${b}`);
      for (const b of branches)
        runs.push({ id: b, dir: `/w/runs/${b}`, stage: 'branch', status: 'done', parents: [seed] });
      for (let u = 0; u < 6; u++) {
        const up = `s${s}-up-${u}`;
        runs.push({
          id: up,
          dir: `/w/runs/${up}`,
          stage: 'upcycle',
          status: 'done',
          parents: [seed, ...branches],
          config: {
            seed: `/w/runs/${seed}/checkpoints/step-000100`,
            experts: branches.map((b) => `/w/runs/${b}/checkpoints/step-000050`),
          },
        });
        runs.push({
          id: `s${s}-moe-${u}`,
          dir: `/w/runs/s${s}-moe-${u}`,
          stage: 'moe',
          status: 'done',
          parents: [`/w/runs/${up}/checkpoint`],
        });
      }
      runs.push({
        id: `s${s}-eval`,
        dir: `/w/runs/s${s}-eval`,
        stage: 'eval',
        status: 'done',
        parents: [seed],
      });
    }
    assert.equal(runs.length, 100);
    buildLineage(runs); // once to compile: on a shared 2-core test machine the first call's JIT dominates
    const t0 = performance.now();
    const roots = buildLineage(runs);
    const ms = performance.now() - t0;
    assert.equal(roots.length, 5);
    assert.equal(count(roots), 100);
    assert.ok(ms < 300, `lineage of 100 runs took ${ms.toFixed(1)} ms`);
  });

  it('gives the existing commands a node’s own run, or the checkpoint it names', () => {
    const roots = buildLineage(demoWithParents());
    const btx = find(roots, 'demo-upcycle-btx')!;
    // The dashboard, log and results commands take the node's run, never its descendants.
    assert.deepEqual(runIdsFrom(roots[0]), ['demo-seed']);
    assert.deepEqual(runIdsFrom(undefined, [btx, find(roots, 'demo-moe-btx')]), [
      'demo-upcycle-btx',
      'demo-moe-btx',
    ]);
    assert.equal(lineageRunId(btx), 'demo-upcycle-btx');
    assert.equal(lineageRunId({ kind: 'run', run: { id: 'x' } }), undefined);
    const expert = btx.inputs!.children[1];
    assert.deepEqual(checkpointRefsFrom(expert), [
      {
        dir: `${ROOT}/demo-branch-code/checkpoints/step-000015`,
        label: 'step-000015',
        runId: 'demo-branch-code',
      },
    ]);
    assert.deepEqual(runIdsFrom(btx.inputs), []);
  });
});
