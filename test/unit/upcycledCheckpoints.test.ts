// The Checkpoints view lists an upcycle run's MoE (runs/<id>/checkpoint/, the main artefact of
// upcycling) with its method and parents (issue 19 §3): listed as the view lists it, from the run store.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  describeUpcycled,
  listRunCheckpoints,
  loadCheckpoint,
} from '../../extension/src/checkpoints/checkpointLoader';
import { RunStore } from '../../extension/src/runs/runStore';
import { mixtralTensors, tmpDir, writeRun, writeSafetensors } from './fixtures';

/** runs/ as `moelab demo` leaves an upcycle stage: run.json beside checkpoint/ (no checkpoints/). */
function fixture(): string {
  const root = tmpDir('moelab-upcycled-');
  const seedCkpt = path.join(root, 'demo-seed', 'checkpoints', 'step-000060');
  writeRun(root, 'demo-seed', { id: 'demo-seed', stage: 'dense', status: 'done', parents: [] });
  fs.mkdirSync(seedCkpt, { recursive: true });
  writeSafetensors(path.join(seedCkpt, 'model.safetensors'), [
    { name: 'lm_head.weight', dtype: 'F32', shape: [8, 4] },
  ]);
  fs.writeFileSync(path.join(seedCkpt, 'config.json'), JSON.stringify({ model_type: 'llama' }));
  fs.writeFileSync(path.join(root, 'demo-seed', 'checkpoints', 'latest'), 'step-000060');
  const parents = ['demo-seed', 'demo-branch-code', 'demo-branch-math'];
  const up = writeRun(root, 'demo-upcycle-btx', {
    id: 'demo-upcycle-btx',
    stage: 'upcycle',
    method: 'btx',
    experiment: 'demo',
    parents,
    status: 'done',
    config: { method: 'btx', seed: seedCkpt, out: path.join(root, 'demo-upcycle-btx', 'checkpoint') },
  });
  const ck = path.join(up, 'checkpoint');
  fs.mkdirSync(ck);
  writeSafetensors(path.join(ck, 'model.safetensors'), mixtralTensors(2, 2, 8, 16, 32));
  fs.writeFileSync(
    path.join(ck, 'config.json'),
    JSON.stringify({
      model_type: 'mixtral',
      num_local_experts: 2,
      num_experts_per_tok: 1,
      moelab: { method: 'btx', options: {}, parents: [{ role: 'seed', path: seedCkpt, files: [] }] },
    }),
  );
  // An upcycle still writing (the engine renames a temp folder into place): checkpoint/ not there yet.
  writeRun(root, 'demo-upcycle-sparse', {
    id: 'demo-upcycle-sparse',
    stage: 'upcycle',
    method: 'sparse',
    parents: ['demo-seed'],
    status: 'running',
  });
  fs.mkdirSync(path.join(root, 'demo-upcycle-sparse', 'checkpoint.tmp-1234'));
  return root;
}

describe('upcycled checkpoints', () => {
  it('lists runs/<id>/checkpoint of an upcycle run with its method and parents', async () => {
    const root = fixture();
    const store = new RunStore({ roots: () => [root], livePollMs: 0 });
    try {
      await store.refresh();
      const refs = (await Promise.all(store.list().map((r) => listRunCheckpoints(r.dir, r.id, r)))).flat();
      const byRun = Object.fromEntries(refs.map((r) => [r.runId, r]));
      assert.deepEqual(Object.keys(byRun).sort(), ['demo-seed', 'demo-upcycle-btx']);
      const btx = byRun['demo-upcycle-btx'];
      assert.equal(btx.dir, path.join(root, 'demo-upcycle-btx', 'checkpoint'));
      assert.equal(btx.isLatest, true);
      assert.deepEqual(btx.upcycled, {
        method: 'btx',
        parents: ['demo-seed', 'demo-branch-code', 'demo-branch-math'],
      });
      assert.equal(
        describeUpcycled(btx.upcycled!),
        'upcycled · btx · from demo-seed, demo-branch-code, demo-branch-math',
      );
      assert.equal(byRun['demo-seed'].upcycled, undefined);
      assert.equal(byRun['demo-seed'].label, 'step-000060');
      // It opens like any checkpoint: an MoE whose summary names the method.
      const loaded = await loadCheckpoint(btx.dir);
      assert.deepEqual(loaded.errors, []);
      assert.equal(loaded.model.layers.length, 2);
      assert.equal(loaded.model.summary.moelab?.method, 'btx');
    } finally {
      store.dispose();
    }
  });

  it('keeps the training run’s newest checkpoint "latest" where a run has both kinds', async () => {
    const run = tmpDir('moelab-both-');
    for (const d of ['checkpoint', 'checkpoints/step-000010']) {
      fs.mkdirSync(path.join(run, d), { recursive: true });
      writeSafetensors(path.join(run, d, 'model.safetensors'), [{ name: 'x', dtype: 'F32', shape: [2] }]);
      fs.writeFileSync(path.join(run, d, 'config.json'), '{}');
    }
    fs.writeFileSync(path.join(run, 'checkpoints', 'latest'), 'step-000010');
    const refs = await listRunCheckpoints(run, 'r', { method: 'sparse', parents: 'not-a-list' });
    assert.deepEqual(
      refs.map((r) => [r.label, r.isLatest, r.upcycled]),
      [
        ['checkpoint', false, { method: 'sparse', parents: [] }],
        ['step-000010', true, undefined],
      ],
    );
  });
});
