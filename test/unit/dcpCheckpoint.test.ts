// A sharded (DCP) training checkpoint in the Checkpoints view: its tensors come from dcp/tensors.json
// (the engine writes it beside DCP's pickled .metadata), in safetensors names, so the checkpoint model
// counts layers, experts and parameters as for a model directory; a bad index is one line, no throw.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { loadCheckpoint } from '../../extension/src/checkpoints/checkpointLoader';
import { DTYPE_BITS } from '../../extension/src/checkpoints/safetensorsHeader';
import { mixtralTensors, tmpDir } from './fixtures';

function dcpCheckpoint(index: unknown): string {
  const dir = path.join(tmpDir('moelab-dcp-'), 'step-000002');
  fs.mkdirSync(path.join(dir, 'dcp'), { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({ model_type: 'mixtral', num_experts_per_tok: 2 }),
  );
  fs.writeFileSync(path.join(dir, 'dcp', '__0_0.distcp'), Buffer.alloc(1000));
  fs.writeFileSync(path.join(dir, 'dcp', '__1_0.distcp'), Buffer.alloc(1000));
  fs.writeFileSync(path.join(dir, 'dcp', 'tensors.json'), JSON.stringify(index));
  return dir;
}

const specs = mixtralTensors(2, 4, 8, 16, 32, 'F32');
const asIndex = (extra: Record<string, unknown> = {}) => ({
  format: 'dcp',
  tensors: Object.fromEntries(
    specs.map((t) => [
      t.name,
      {
        dtype: t.dtype,
        shape: t.shape,
        bytes: (t.shape.reduce((a, b) => a * b, 1) * DTYPE_BITS[t.dtype]) / 8,
      },
    ]),
  ),
  ...extra,
});

describe('DCP checkpoints', () => {
  it('are read from their tensor index like a model directory', async () => {
    const ck = await loadCheckpoint(dcpCheckpoint(asIndex()));
    assert.deepEqual(ck.errors, []);
    assert.equal(ck.tensors.length, specs.length);
    assert.equal(ck.model.summary.numLayers, 2);
    assert.equal(ck.model.summary.numExperts, 4);
    const params = specs.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    assert.equal(ck.model.summary.totalParams, params);
    assert.ok(ck.model.summary.bytesOnDisk >= 2000); // the shards and the index
  });

  it('report a malformed index in one line', async () => {
    const wrongBytes = asIndex();
    (wrongBytes.tensors['lm_head.weight'] as { bytes: number }).bytes = 7;
    for (const [index, want] of [
      [{ format: 'dcp' }, /not a DCP tensor index/],
      [wrongBytes, /lm_head\.weight: 7 bytes, its shape and dtype make 1024/],
      [{ format: 'dcp', tensors: { x: { dtype: 'Q9', shape: [1], bytes: 1 } } }, /tensor x: unknown dtype/],
      [{ format: 'dcp', tensors: { x: { dtype: 'F32', shape: [-1], bytes: 4 } } }, /shape is not a list/],
    ] as const) {
      const ck = await loadCheckpoint(dcpCheckpoint(index));
      assert.equal(ck.tensors.length, 0);
      assert.match(ck.errors.join('\n'), want);
      assert.ok(ck.errors.every((e) => !e.includes('\n')));
    }
    const dir = dcpCheckpoint(asIndex());
    fs.writeFileSync(path.join(dir, 'dcp', 'tensors.json'), '{"format": "dc');
    assert.match((await loadCheckpoint(dir)).errors[0], /^dcp\/tensors\.json: /);
  });
});
