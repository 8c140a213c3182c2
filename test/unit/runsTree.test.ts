import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { RunAppend, RunInfo } from '../../extension/src/runs/model';
import { isStale, parseRunJson } from '../../extension/src/runs/records';
import { decimate, RunStore, type StatusChange } from '../../extension/src/runs/runStore';
import { buildRunsTree, runDescription } from '../../extension/src/runs/runsTreeModel';
import { tmpDir, writeRun } from './fixtures';

const HOST = 'this-host';
const DEAD_PID = 999_999_01;

function fixture(): string {
  const root = tmpDir('moelab-runs-');
  writeRun(
    root,
    'demo-dense',
    { id: 'demo-dense', stage: 'dense', status: 'done', experiment: 'demo', config: { steps: 100 } },
    [
      { step: 50, loss: 3.1, split: 'train' },
      { step: 100, loss: 2.5, split: 'train', tokens_per_s: 1234 },
      { step: 100, loss: 2.7, split: 'eval' },
    ],
  );
  writeRun(
    root,
    'demo-btx',
    {
      id: 'demo-btx',
      stage: 'moe',
      method: 'btx',
      status: 'running',
      experiment: 'demo',
      host: HOST,
      pid: process.pid,
      config: { steps: 400 },
    },
    [{ step: 120, loss: 2.31, tokens_per_s: 51234 }],
    [{ step: 120, layer: 0, router: 'ffn', load: [0.5, 0.5], prob: [0.4, 0.6] }],
  );
  writeRun(root, 'demo-sparse', {
    id: 'demo-sparse',
    stage: 'moe',
    method: 'sparse',
    status: 'running',
    experiment: 'demo',
    host: HOST,
    pid: DEAD_PID,
  });
  writeRun(root, 'demo-bam', {
    id: 'demo-bam',
    stage: 'moe',
    method: 'bam-ekv',
    status: 'diverged',
    experiment: 'demo',
  });
  // No experiment field: grouped by the parent folder.
  writeRun(root, 'sweep-a/lr-1e-3', { id: 'lr-1e-3', stage: 'dense', status: 'failed', error: 'CUDA OOM' });
  writeRun(root, 'sweep-a/lr-3e-4', {
    id: 'lr-3e-4',
    stage: 'dense',
    status: 'queued',
    experiment: null,
    method: null,
    error: null,
  });
  // Not runs: a broken run.json and a folder without one.
  fs.mkdirSync(path.join(root, 'broken'));
  fs.writeFileSync(path.join(root, 'broken', 'run.json'), '{"id": "bro');
  fs.mkdirSync(path.join(root, 'empty'));
  return root;
}

const alive = (pid: number) => pid === process.pid;
const stores: RunStore[] = [];
function newStore(root: string, extra: Partial<ConstructorParameters<typeof RunStore>[0]> = {}): RunStore {
  const s = new RunStore({ roots: () => [root], host: HOST, isPidAlive: alive, livePollMs: 0, ...extra });
  stores.push(s);
  return s;
}
after(() => stores.forEach((s) => s.dispose()));

describe('run store and runs tree', () => {
  it('builds experiments → stages → runs from a runs directory', async () => {
    const root = fixture();
    const store = newStore(root);
    await store.refresh();
    assert.deepEqual(
      store
        .list()
        .map((r) => r.id)
        .sort(),
      ['demo-bam', 'demo-btx', 'demo-dense', 'demo-sparse', 'lr-1e-3', 'lr-3e-4'],
    );
    const tree = buildRunsTree(
      store.list(),
      (id) => store.latestTrain(id),
      (id) => store.badLines(id),
    );
    assert.deepEqual(
      tree.map((e) => e.label),
      ['demo', 'sweep-a'],
    );
    const demo = tree[0];
    assert.deepEqual(
      demo.children.map((s) => s.label),
      ['dense', 'moe'],
    );
    const moe = demo.children[1].children;
    const byId = Object.fromEntries(moe.map((r) => [r.label, r]));
    assert.equal(byId['demo-btx'].description, 'step 120/400 · loss 2.310 · 51.2K tok/s · btx');
    assert.equal(byId['demo-btx'].icon.id, 'sync~spin');
    assert.equal(byId['demo-sparse'].status, 'stale', 'running with a dead pid on this host');
    assert.match(byId['demo-sparse'].description, /^stale\/failed\?/);
    assert.equal(byId['demo-bam'].icon.id, 'warning');
    const dense = demo.children[0].children[0];
    assert.equal(dense.description, 'step 100/100 · loss 2.500', 'the latest train record, not the eval one');
    assert.equal(demo.description, '1 running, 1 diverged, 1 stale/failed?, 1 done');
    const sweep = tree[1].children[0].children.map((r) => [r.label, r.status, r.icon.id]);
    assert.deepEqual(sweep, [
      ['lr-1e-3', 'failed', 'error'],
      ['lr-3e-4', 'queued', 'clock'],
    ]);
    assert.match(tree[1].children[0].children[0].tooltip, /CUDA OOM/);
    assert.equal(store.routing('demo-btx').length, 1);
  });

  it('tails appends, fires append events and reports only live transitions', async () => {
    const root = fixture();
    const store = newStore(root);
    const changes: StatusChange[] = [];
    const appends: RunAppend[] = [];
    store.onDidChangeStatus((c) => changes.push(c));
    store.onDidAppend((a) => appends.push(a));
    await store.refresh();
    assert.equal(changes.length, 0, 'nothing is announced for the state found at startup');
    const btx = path.join(root, 'demo-btx');
    fs.appendFileSync(path.join(btx, 'metrics.jsonl'), '{"step":130,"loss":2.2}\n{"step":140,"lo');
    appends.length = 0;
    await store.refresh();
    assert.deepEqual(
      appends.map((a) => a.metrics.map((m) => m.step)),
      [[130]],
    );
    fs.appendFileSync(path.join(btx, 'metrics.jsonl'), 'ss":2.1}\ngarbage\n');
    const run = JSON.parse(fs.readFileSync(path.join(btx, 'run.json'), 'utf8'));
    fs.writeFileSync(path.join(btx, 'run.json'), JSON.stringify({ ...run, status: 'done' }));
    // mtime resolution can hide a rewrite within the same tick
    fs.utimesSync(path.join(btx, 'run.json'), new Date(), new Date(Date.now() + 5000));
    await store.refresh();
    assert.deepEqual(
      store.metrics('demo-btx').map((m) => m.step),
      [120, 130, 140],
    );
    assert.deepEqual(store.badLines('demo-btx'), { metrics: 1, routing: 0 });
    assert.deepEqual(
      changes.map((c) => [c.run.id, c.previous, c.current]),
      [['demo-btx', 'running', 'done']],
    );
    // Truncation: the store drops what it had and says so.
    fs.writeFileSync(path.join(btx, 'metrics.jsonl'), '{"step":1,"loss":9}\n');
    appends.length = 0;
    await store.refresh();
    assert.equal(appends[0]?.reset, true);
    assert.deepEqual(
      store.metrics('demo-btx').map((m) => m.step),
      [1],
    );
    // A run that disappears leaves the list.
    fs.rmSync(path.join(root, 'demo-bam'), { recursive: true });
    await store.refresh();
    assert.equal(store.get('demo-bam'), undefined);
  });

  it('stale only for this host: other hosts keep their word', () => {
    const base: RunInfo = { id: 'r', dir: '/r', status: 'running', pid: DEAD_PID };
    assert.equal(isStale({ ...base, host: HOST }, HOST, alive), true);
    assert.equal(isStale({ ...base }, HOST, alive), true);
    assert.equal(isStale({ ...base, host: 'gpu-node-7' }, HOST, alive), false);
    assert.equal(isStale({ ...base, status: 'done' }, HOST, alive), false);
  });

  it('decimates enormous runs but keeps eval records and the recent tail', async () => {
    const recs = Array.from({ length: 1000 }, (_, i) => ({
      step: i,
      split: i % 100 === 0 ? 'eval' : 'train',
    }));
    const out = decimate(recs, 400);
    assert.ok(out.length <= 400 + 10 && out.length < recs.length);
    assert.deepEqual(out.slice(-200), recs.slice(-200));
    for (const r of recs.filter((x) => x.split === 'eval')) assert.ok(out.includes(r));
    const root = tmpDir();
    writeRun(
      root,
      'big',
      { id: 'big', status: 'done' },
      Array.from({ length: 5000 }, (_, i) => ({ step: i, loss: 1 })),
    );
    const store = newStore(root, { maxMetricRecords: 1000 });
    await store.refresh();
    const m = store.metrics('big');
    assert.ok(m.length <= 1000, `kept ${m.length}`);
    assert.equal(m[m.length - 1].step, 4999);
    assert.equal(m[0].step, 0);
  });

  it('descriptions without metrics and unknown statuses', () => {
    assert.equal(
      runDescription({ id: 'x', dir: '/x', status: 'queued', stage: 'moe', method: 'upit' }, undefined),
      'queued · upit',
    );
    // A status or stage this extension does not know (a newer engine's) reads as queued / none.
    const odd = parseRunJson(JSON.stringify({ status: 'weird', stage: 'seed' }), '/r/x', 'x');
    assert.equal(odd?.status, 'queued');
    assert.equal(odd?.stage, undefined);
    const tree = buildRunsTree([odd!], () => undefined);
    assert.equal(tree[0].children[0].label, 'other');
    assert.equal(tree[0].children[0].children[0].icon.id, 'clock');
  });
});
