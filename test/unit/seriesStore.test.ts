import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Series, SeriesStore } from '../../webview/src/dashboard/seriesStore';
import { decimateM4 } from '../../webview/src/shared/decimate';
import { smoothInto } from '../../webview/src/shared/smoothing';

describe('dashboard series', () => {
  it('typed columns: gaps skipped, a resumed run replaces the steps it logs again, smoothing as if computed whole', () => {
    const s = new Series('r', 'loss', 0.6);
    const steps = new Float64Array([1, 2, 3, 4, 5, 3, 4, 5, 6]);
    const ys = new Float64Array([5, 4, NaN, 3, 2.5, 9, 8, 7, 6]);
    const zeros = new Float64Array(steps.length);
    s.reserve(steps.length);
    s.pushColumn(steps, zeros, zeros, zeros, ys, 0);
    assert.deepEqual(Array.from(s.step.subarray(0, s.n)), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(Array.from(s.y.subarray(0, s.n)), [5, 4, 9, 8, 7, 6]);
    const ref = new Float64Array(s.n);
    smoothInto(s.y, s.n, 0.6, ref);
    for (let i = 0; i < s.n; i++) assert.ok(Math.abs(s.smooth[i] - ref[i]) < 1e-12, `smooth[${i}]`);
  });

  it('plain and typed columns give the same series', () => {
    const steps = [1, 2, 3, 4];
    const ys = [1, null, 3, 2];
    const a = new Series('a', 'loss', 0.5);
    a.reserve(4);
    a.pushColumn(steps, [null, null, null, null], [null, null, null, null], [null, null, null, null], ys, 0);
    const b = new Series('b', 'loss', 0.5);
    b.reserve(4);
    const nan = new Float64Array(4).fill(NaN);
    b.pushColumn(new Float64Array(steps), nan, nan, nan, new Float64Array(ys.map((v) => v ?? NaN)), 0);
    assert.deepEqual(Array.from(b.smooth.subarray(0, b.n)), Array.from(a.smooth.subarray(0, a.n)));
  });

  it('FLOPs x axis: follows the points through a resume, gaps for blocks without the column', () => {
    const store = new SeriesStore();
    // A run resumed from step 2 whose checkpoint counted 100 FLOPs more than the lost steps did.
    store.append({
      runId: 'r',
      split: 'train',
      step: [1, 2, 3],
      tokens: [4, 8, 12],
      flops: [10, 20, 30],
      time: [0, 1, 2],
      values: { loss: [3, 2, 1] },
    });
    store.append({
      runId: 'r',
      split: 'train',
      step: [3, 4],
      tokens: [12, 16],
      flops: [130, 140],
      time: [3, 4],
      values: { loss: [1.5, 1.2] },
    });
    const s = store.get('r', 'train/loss')!;
    assert.deepEqual(Array.from(s.x('flops').subarray(0, s.n)), [10, 20, 130, 140]);
    assert.deepEqual(Array.from(s.x('tokens').subarray(0, s.n)), [4, 8, 12, 16]);
    store.append({
      runId: 'old',
      split: 'train',
      step: [1, 2],
      tokens: [4, 8],
      time: [0, 1],
      values: { loss: [3, 2] },
    });
    const old = store.get('old', 'train/loss')!;
    assert.ok(Array.from(old.x('flops').subarray(0, old.n)).every(Number.isNaN));
  });
});

describe('typed columns taken without a copy', () => {
  it('a clean block is adopted, never written: later appends and a resume copy first', () => {
    const store = new SeriesStore();
    const col = (xs: number[]) => new Float64Array(xs);
    const block = {
      runId: 'r',
      split: 'train' as const,
      step: col([1, 2, 3]),
      tokens: col([10, 20, 30]),
      flops: col([1, 2, 3]),
      time: col([100, 101, 102]),
      values: { loss: col([3, 2, 1]) },
    };
    const sent = JSON.stringify(Object.values(block).map((v) => (v instanceof Float64Array ? [...v] : v)));
    store.append(block);
    const s = store.get('r', 'train/loss')!;
    assert.equal(s.y, block.values.loss, 'adopted, not copied');
    assert.deepEqual(Array.from(s.x('time').subarray(0, s.n)), [0, 1, 2]);
    store.append({
      ...block,
      step: col([2, 3]),
      tokens: col([20, 30]),
      flops: col([2, 3]),
      time: col([103, 104]),
      values: { loss: col([9, 8]) },
    });
    assert.deepEqual(Array.from(s.step.subarray(0, s.n)), [1, 2, 3]);
    assert.deepEqual(Array.from(s.y.subarray(0, s.n)), [3, 9, 8]);
    assert.deepEqual(Array.from(s.x('time').subarray(0, s.n)), [0, 3, 4]);
    const after = JSON.stringify(Object.values(block).map((v) => (v instanceof Float64Array ? [...v] : v)));
    assert.equal(after, sent, "the message's arrays are untouched");
    const ref = new Float64Array(s.n);
    smoothInto(s.y, s.n, 0, ref);
    assert.deepEqual(Array.from(s.smooth.subarray(0, s.n)), Array.from(ref));
  });

  it('a block with a gap or a step going back is copied and filtered as before', () => {
    const store = new SeriesStore();
    const loss = new Float64Array([3, NaN, 1]);
    store.append({
      runId: 'r',
      split: 'train',
      step: new Float64Array([1, 2, 3]),
      tokens: new Float64Array(3),
      time: new Float64Array(3),
      values: { loss },
    });
    const s = store.get('r', 'train/loss')!;
    assert.notEqual(s.y, loss);
    assert.deepEqual(Array.from(s.y.subarray(0, s.n)), [3, 1]);
  });
});

describe('since the seed', () => {
  it('shifts tokens and FLOPs by the run offset, also for series created later, appends and resumes', () => {
    const store = new SeriesStore();
    store.setOffset('branch', { tokens: 1000, flops: 5e9 });
    const block = (steps: number[]) => ({
      runId: 'branch',
      split: 'train' as const,
      step: steps,
      tokens: steps.map((s) => s * 10),
      flops: steps.map((s) => s * 1e6),
      time: steps,
      values: { loss: steps.map(() => 1) },
    });
    store.append(block([1, 2, 3]));
    const s = store.get('branch', 'train/loss')!;
    const xs = (mode: 'tokensSinceSeed' | 'flopsSinceSeed') => Array.from(s.x(mode).subarray(0, s.n));
    assert.deepEqual(xs('tokensSinceSeed'), [1010, 1020, 1030]);
    assert.deepEqual(Array.from(s.x('tokens').subarray(0, s.n)), [10, 20, 30]); // the plain axis untouched
    store.append(block([4, 5]));
    assert.deepEqual(xs('tokensSinceSeed'), [1010, 1020, 1030, 1040, 1050]);
    store.append(block([2, 3])); // resumed from step 1: steps 2.. are replaced
    assert.deepEqual(xs('tokensSinceSeed'), [1010, 1020, 1030]);
    assert.deepEqual(xs('flopsSinceSeed'), [5.001e9, 5.002e9, 5.003e9]);
    store.setOffset('branch', { tokens: 0, flops: 0 });
    assert.deepEqual(xs('tokensSinceSeed'), [10, 20, 30]);
  });
});

describe('M4 decimation', () => {
  it("keeps every column's first, min, max and last point, in index order", () => {
    const n = 10_000;
    const xs = new Float64Array(n),
      ys = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      xs[i] = i;
      ys[i] = Math.sin(i / 37) * (i % 7);
    }
    const columns = 50;
    const out = decimateM4(xs, ys, n, 0, n - 1, columns);
    assert.ok(out.length / 2 <= columns * 4 + 4);
    for (let i = 2; i < out.length; i += 2) assert.ok(out[i] >= out[i - 2], 'x ascending');
    // The global extremes survive decimation.
    let lo = Infinity,
      hi = -Infinity;
    for (let i = 1; i < out.length; i += 2) {
      lo = Math.min(lo, out[i]);
      hi = Math.max(hi, out[i]);
    }
    assert.equal(lo, Math.min(...ys));
    assert.equal(hi, Math.max(...ys));
  });
});
