import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { diffTensors, renderDiff } from '../../extension/src/checkpoints/checkpointDiff';
import { listRunCheckpoints, loadCheckpoint } from '../../extension/src/checkpoints/checkpointLoader';
import {
  buildCheckpointModel,
  classifyTensor,
  describeSummary,
  formatCount,
  summaryRows,
} from '../../extension/src/checkpoints/checkpointModel';
import type { TensorInfo } from '../../extension/src/checkpoints/safetensorsHeader';
import { matchTensor, PATTERN_NAMES } from '../../extension/src/checkpoints/tensorLayout';
import { mixtralTensors, type TensorSpec, tmpDir, writeSafetensors, writeSharded } from './fixtures';

const asInfo = (specs: TensorSpec[]): TensorInfo[] =>
  specs.map((s) => ({ ...s, begin: 0, end: 0, file: 'x' }));
const P = (specs: TensorSpec[]) => specs.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);

function bamTensors(L: number, E: number, d: number, f: number, v: number, sharedKv: boolean): TensorSpec[] {
  const dt = 'F32';
  const t: TensorSpec[] = [{ name: 'model.embed_tokens.weight', dtype: dt, shape: [v, d] }];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    t.push({ name: `${p}self_attn.router.weight`, dtype: dt, shape: [E, d] });
    for (let e = 0; e < E; e++)
      for (const x of sharedKv ? ['q', 'o'] : ['q', 'k', 'v', 'o'])
        t.push({ name: `${p}self_attn.experts.${e}.${x}_proj.weight`, dtype: dt, shape: [d, d] });
    if (sharedKv)
      for (const x of ['k', 'v'])
        t.push({ name: `${p}self_attn.${x}_proj.weight`, dtype: dt, shape: [d, d] });
    t.push({ name: `${p}block_sparse_moe.gate.weight`, dtype: dt, shape: [E, d] });
    for (let e = 0; e < E; e++)
      for (const w of ['w1', 'w2', 'w3'])
        t.push({
          name: `${p}block_sparse_moe.experts.${e}.${w}.weight`,
          dtype: dt,
          shape: w === 'w2' ? [d, f] : [f, d],
        });
    t.push({ name: `${p}input_layernorm.weight`, dtype: dt, shape: [d] });
  }
  t.push(
    { name: 'model.norm.weight', dtype: dt, shape: [d] },
    { name: 'lm_head.weight', dtype: dt, shape: [v, d] },
  );
  return t;
}

interface NameCase {
  source: string;
  name: string;
  group: string;
  expert?: number;
  matches: Record<string, string[]>;
}
const NAMES: NameCase[] = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'tensor-names.json'), 'utf8'),
).names;

describe('tensor-name patterns (engine/moelab/schema/layout.json)', () => {
  it('capture in JavaScript what engine/tests/test_layout_patterns.py checks in Python', () => {
    assert.ok(NAMES.length > 10);
    for (const c of NAMES) {
      const got: Record<string, string[]> = {};
      for (const p of PATTERN_NAMES) {
        const m = matchTensor(p, c.name);
        if (m) got[p] = Object.values(m);
      }
      assert.deepEqual(got, c.matches, c.name);
    }
  });

  it('classify the real names of Mixtral, Qwen3-MoE and the engine’s BAM layout', () => {
    for (const c of NAMES) {
      const layer = c.matches.layer?.[0];
      assert.deepEqual(
        classifyTensor(c.name),
        {
          ...(layer !== undefined ? { layer: Number(layer) } : {}),
          kind: c.group,
          ...(c.expert !== undefined ? { expert: c.expert } : {}),
        },
        c.name,
      );
    }
  });
});

describe('checkpoint model', () => {
  it('classifies Llama, Mixtral, BAM and Qwen-MoE names', () => {
    assert.deepEqual(classifyTensor('model.layers.3.self_attn.q_proj.weight'), {
      layer: 3,
      kind: 'attention',
    });
    assert.deepEqual(classifyTensor('model.layers.3.mlp.gate_proj.weight'), { layer: 3, kind: 'ffn' });
    assert.deepEqual(classifyTensor('model.layers.3.block_sparse_moe.gate.weight'), {
      layer: 3,
      kind: 'ffnRouter',
    });
    assert.deepEqual(classifyTensor('model.layers.3.block_sparse_moe.experts.7.w2.weight'), {
      layer: 3,
      kind: 'ffnExperts',
      expert: 7,
    });
    assert.deepEqual(classifyTensor('model.layers.0.self_attn.experts.2.o_proj.weight'), {
      layer: 0,
      kind: 'attentionExperts',
      expert: 2,
    });
    assert.deepEqual(classifyTensor('model.layers.0.self_attn.router.weight'), {
      layer: 0,
      kind: 'attentionRouter',
    });
    assert.deepEqual(classifyTensor('model.layers.1.mlp.experts.0.up_proj.weight'), {
      layer: 1,
      kind: 'ffnExperts',
      expert: 0,
    });
    assert.deepEqual(classifyTensor('model.layers.1.mlp.gate.weight'), { layer: 1, kind: 'ffnRouter' });
    assert.deepEqual(classifyTensor('model.layers.1.post_attention_layernorm.weight'), {
      layer: 1,
      kind: 'norm',
    });
    assert.deepEqual(classifyTensor('lm_head.weight'), { kind: 'other' });
  });

  it('Mixtral: total vs active parameters with top-2 of 8', () => {
    const t = mixtralTensors(2, 8, 16, 64, 100);
    const m = buildCheckpointModel(
      asInfo(t),
      { model_type: 'mixtral', num_local_experts: 8, num_experts_per_tok: 2 },
      123,
    );
    const expertParams = 2 * 8 * 3 * 16 * 64;
    assert.equal(m.summary.totalParams, P(t));
    assert.equal(m.summary.activeParams, P(t) - expertParams * (6 / 8));
    assert.equal(m.summary.numExperts, 8);
    assert.equal(m.summary.topK, 2);
    assert.equal(m.layers.length, 2);
    assert.deepEqual(
      m.layers[0].groups.map((g) => g.kind),
      ['attention', 'ffnRouter', 'ffnExperts', 'norm'],
    );
    assert.equal(m.layers[0].groups[2].experts.length, 8);
    assert.deepEqual(
      m.outside.map((x) => x.name),
      ['lm_head.weight', 'model.embed_tokens.weight', 'model.norm.weight'],
    );
    assert.match(describeSummary(m.summary), /^mixtral · 8 experts, top-2 · .* total, .* active$/);
  });

  it('BAM shared-KV: soft attention experts all count as active; moelab metadata is shown', () => {
    const t = bamTensors(1, 3, 8, 32, 50, true);
    const cfg = {
      model_type: 'moelab',
      moelab: {
        method: 'bam-skv',
        options: { top_k: 1 },
        parents: [{ path: 'experts/code', sha256: 'ab'.repeat(32) }],
        moe: { top_k: 1, num_experts: 3 },
      },
    };
    const m = buildCheckpointModel(asInfo(t), cfg, 0);
    const ffnExperts = 3 * 3 * 8 * 32;
    assert.equal(m.summary.activeParams, P(t) - ffnExperts * (2 / 3));
    assert.equal(m.summary.attentionExperts, 3);
    assert.equal(m.summary.attentionTopK, 'soft');
    const groups = m.layers[0].groups;
    assert.deepEqual(
      groups.map((g) => g.kind),
      ['attentionRouter', 'attention', 'attentionExperts', 'ffnRouter', 'ffnExperts', 'norm'],
    );
    assert.deepEqual(
      groups[2].experts[0].tensors.map((x) => x.name.split('.').slice(-2)[0]),
      ['o_proj', 'q_proj'],
    );
    const rows = Object.fromEntries(summaryRows(m.summary).map((r) => [r.label, r.value]));
    assert.equal(rows.method, 'bam-skv');
    assert.equal(rows['parent 1'], 'experts/code');
    assert.match(rows['attention experts'], /soft/);
    // Hard attention routing (top-1 of 3) makes attention experts partly inactive too.
    const hard = buildCheckpointModel(
      asInfo(t),
      { ...cfg, moelab: { ...cfg.moelab, moe: { top_k: 1, attn_top_k: 1 } } },
      0,
    );
    assert.equal(hard.summary.activeParams, P(t) - ffnExperts * (2 / 3) - 3 * 2 * 8 * 8 * (2 / 3));
  });

  it('BAM expert-KV top-k, engine config.json: Q and O of unselected experts idle, every K and V active', () => {
    const t = bamTensors(2, 4, 8, 32, 50, false);
    const ffnExperts = 2 * 4 * 3 * 8 * 32;
    const qo = 2 * 4 * 2 * 8 * 8;
    const top2 = buildCheckpointModel(
      asInfo(t),
      { model_type: 'moelab', moe: { num_experts: 4, top_k: 1, attn_experts: true, attn_top_k: 2 } },
      0,
    );
    assert.equal(top2.summary.attentionTopK, 2);
    assert.equal(top2.summary.activeParams, P(t) - ffnExperts * (3 / 4) - qo * (2 / 4));
    const soft = buildCheckpointModel(
      asInfo(t),
      { model_type: 'moelab', moe: { num_experts: 4, top_k: 1, attn_experts: true, attn_top_k: 0 } },
      0,
    );
    assert.equal(soft.summary.attentionTopK, 'soft');
    assert.equal(soft.summary.activeParams, P(t) - ffnExperts * (3 / 4));
  });

  it('dense Llama: active = total', () => {
    const t: TensorSpec[] = [
      { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [4, 4] },
      { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'BF16', shape: [8, 4] },
    ];
    const m = buildCheckpointModel(asInfo(t), { model_type: 'llama' }, 0);
    assert.equal(m.summary.activeParams, m.summary.totalParams);
    assert.equal(describeSummary(m.summary), 'llama · 48 params');
  });

  it('loads a sharded checkpoint from disk and lists run checkpoints with latest', async () => {
    const run = tmpDir('moelab-ckpt-');
    const ck = path.join(run, 'checkpoints', 'step-000200');
    writeSharded(ck, mixtralTensors(4, 4, 32, 64, 128), 4, { model_type: 'mixtral', num_experts_per_tok: 2 });
    fs.mkdirSync(path.join(run, 'checkpoints', 'step-000100'));
    fs.mkdirSync(path.join(run, 'checkpoints', 'step-000300.tmp'));
    fs.writeFileSync(path.join(run, 'checkpoints', 'latest'), 'step-000200\n');
    const refs = await listRunCheckpoints(run, 'r1');
    assert.deepEqual(
      refs.map((r) => [r.label, r.isLatest]),
      [
        ['step-000100', false],
        ['step-000200', true],
      ],
    );
    const loaded = await loadCheckpoint(ck);
    assert.deepEqual(loaded.errors, []);
    assert.equal(loaded.model.layers.length, 4);
    assert.equal(
      loaded.model.summary.bytesOnDisk,
      fs
        .readdirSync(ck)
        .filter((n) => n.endsWith('.safetensors'))
        .reduce((s, n) => s + fs.statSync(path.join(ck, n)).size, 0),
    );
    const empty = await loadCheckpoint(path.join(run, 'checkpoints', 'step-000100'));
    assert.ok(empty.errors.includes('config.json is missing'));
  });

  it('diffs two checkpoints by header', () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.safetensors');
    writeSafetensors(a, [{ name: 'x', dtype: 'F32', shape: [2] }]);
    const d = diffTensors(
      asInfo([
        { name: 'same', dtype: 'F32', shape: [2] },
        { name: 'grow', dtype: 'F32', shape: [2] },
        { name: 'gone', dtype: 'F32', shape: [3] },
      ]),
      asInfo([
        { name: 'same', dtype: 'F32', shape: [2] },
        { name: 'grow', dtype: 'BF16', shape: [4] },
        { name: 'new', dtype: 'F32', shape: [5] },
      ]),
    );
    assert.equal(d.same, 1);
    const text = renderDiff('A', 'B', d);
    assert.match(text, /^--- A\n\+\+\+ B\n/);
    assert.match(text, /\n-grow {2}F32\[2\]\n\+grow {2}BF16\[4\]\n/);
    assert.match(text, /\n-gone {2}F32\[3\]\n/);
    assert.match(text, /\n\+new {2}F32\[5\]\n/);
  });

  it('formats counts', () => {
    assert.equal(formatCount(999), '999');
    assert.equal(formatCount(46_702_792_704), '46.7B');
    assert.equal(formatCount(1_000_000), '1M');
  });
});
