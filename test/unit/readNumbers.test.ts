// The numbers users read off the panels, each against a value computed here from its written-out
// formula on small inputs: the seed band's mean and min–max, the outlier-robust y range, and the
// router statistics (CV, dead experts, specialization).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { groupBand, type Curve } from '../../webview/src/dashboard/groupBand';
import {
  DEAD_UTILIZATION,
  DEAD_WINDOW,
  deadExperts,
  imbalance,
  specialization,
} from '../../webview/src/router/routingStats';
import { yDomain } from '../../webview/src/shared/yRange';

const close = (a: number, b: number, msg?: string): void =>
  assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${msg ?? ''} ${a} != ${b}`);

/** y at x on the polyline (xs, ys), by a linear scan; NaN outside [xs[0], xs[n-1]]. */
function lerp(xs: number[], ys: number[], x: number): number {
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] === x) return ys[i];
    if (i > 0 && xs[i - 1] < x && x < xs[i])
      return ys[i - 1] + ((x - xs[i - 1]) / (xs[i] - xs[i - 1])) * (ys[i] - ys[i - 1]);
  }
  return NaN;
}

const curve = (xs: number[], ys: number[]): Curve => ({ xs, ys, n: xs.length });

describe('seed band (groupBand)', () => {
  const members: [number[], number[]][] = [
    [
      [0, 10, 20, 30, 40],
      [4, 2, 1, 0.5, 0.25],
    ],
    [
      [0, 5, 15, 25],
      [3, 5, 1, 1],
    ],
    [
      [10, 20],
      [6, 0],
    ],
  ];

  it('mean and min–max over the members present at each x of the longest member', () => {
    const band = groupBand(members.map(([x, y]) => curve(x, y)));
    const grid = members[0][0];
    assert.equal(band.n, grid.length);
    for (let k = 0; k < grid.length; k++) {
      const ys = members.map(([x, y]) => lerp(x, y, grid[k])).filter(Number.isFinite);
      assert.equal(band.xs[k], grid[k]);
      close(band.mean[k], ys.reduce((a, b) => a + b, 0) / ys.length, `mean at ${grid[k]}`);
      assert.equal(band.lo[k], Math.min(...ys));
      assert.equal(band.hi[k], Math.max(...ys));
    }
    // Spelled out at x = 10: 2 (first), 5 + (10-5)/(15-5)·(1-5) = 3 (second), 6 (third).
    close(band.mean[1], (2 + 3 + 6) / 3);
    assert.deepEqual([band.lo[1], band.hi[1]], [2, 6]);
    // At x = 40 only the first member is defined.
    assert.deepEqual([band.mean[4], band.lo[4], band.hi[4]], [0.25, 0.25, 0.25]);
  });

  it('thins the grid to maxPoints by a stride over the longest member', () => {
    const band = groupBand(
      members.map(([x, y]) => curve(x, y)),
      2,
    );
    // 5 points, at most 2: stride ceil(5/2) = 3 → x = 0, 30.
    assert.deepEqual(Array.from(band.xs.subarray(0, band.n)), [0, 30]);
    // At x = 30 the second member has ended (its last x is 25) and the third too: the first alone.
    assert.deepEqual([band.mean[1], band.lo[1], band.hi[1]], [0.5, 0.5, 0.5]);
  });
});

describe('y range', () => {
  /** [x, y] pairs as decimateM4 returns them. */
  const pairs = (ys: number[]): Float64Array => new Float64Array(ys.flatMap((y, i) => [i, y]));

  it('without "ignore outliers": min and max of what is drawn, padded by 5% of the span', () => {
    const ys = [3, 1, 4, 1, 5, 9, 2, 6];
    const [lo, hi] = yDomain([pairs(ys)], [], false, false);
    const pad = 0.05 * (9 - 1);
    close(lo, 1 - pad);
    close(hi, 9 + pad);
  });

  it('with "ignore outliers": the 2nd and 98th percentiles (nearest rank), so a spike is left out', () => {
    // 0.1 … 9.9 and one spike of 1e6: n = 100, sorted s, low s[floor(0.02·n)] = s[2], high s[ceil(0.98·n)] = s[98].
    const samples = [...Array.from({ length: 99 }, (_, i) => (i + 1) / 10), 1e6];
    const shuffled = samples.map((v, i) => samples[(i * 37) % 100]);
    const [lo, hi] = yDomain([pairs(samples)], shuffled, false, true);
    const s = [...samples].sort((a, b) => a - b);
    const pLo = s[2],
      pHi = s[98];
    assert.deepEqual([pLo, pHi], [0.3, 9.9]);
    const pad = 0.05 * (pHi - pLo);
    close(lo, pLo - pad);
    close(hi, pHi + pad);
    // Too few samples for percentiles: the full range, spike included.
    const [, hiFew] = yDomain([pairs([1, 2, 1e6])], [1, 2, 1e6], false, true);
    assert.ok(hiFew > 1e6);
  });

  it('log scale: non-positive values skipped, a factor 1.05 of padding', () => {
    const [lo, hi] = yDomain([pairs([0, -1, 0.01, 100])], [], true, false);
    close(lo, 0.01 / 1.05);
    close(hi, 100 * 1.05);
  });
});

describe('router statistics', () => {
  it('CV: population standard deviation of the load over its mean', () => {
    for (const load of [
      [0.1, 0.2, 0.3, 0.4],
      [1.5, 0.25, 0.25, 0, 0, 0, 0, 0],
      [0.5, 0.5],
    ]) {
      const n = load.length;
      const mean = load.reduce((a, b) => a + b, 0) / n;
      const std = Math.sqrt(load.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
      const got = imbalance(load);
      close(got.cv, std / mean);
      close(got.maxOverMean, Math.max(...load) / mean);
    }
    close(imbalance([0.1, 0.2, 0.3, 0.4]).cv, Math.sqrt(0.2)); // std √0.0125 over mean 0.25
  });

  it('dead: under 5% of the fair share (load sum / E), not of all tokens, in each of the last steps', () => {
    assert.equal(DEAD_UTILIZATION, 0.05);
    // Top-2 over 4 experts: loads sum to 2, fair share 0.5. Expert 2 gets 0.035 / 0.5 = 7% of its
    // share (alive), expert 3 gets 0.005 / 0.5 = 1% (dead); an absolute 5% rule would kill both.
    const top2 = [0.98, 0.98, 0.035, 0.005];
    const steps = Array.from({ length: DEAD_WINDOW }, () => top2);
    assert.deepEqual(deadExperts(steps), [3]);
    // 32 experts with equal load (1/32 ≈ 3% of tokens each): none dead.
    assert.deepEqual(deadExperts([new Array(32).fill(1 / 32)]), []);
    // Alive in one of the last DEAD_WINDOW steps: not dead; alive only before them: dead.
    const revived = [...steps.slice(1), [0.5, 0.5, 0.5, 0.5]];
    assert.deepEqual(deadExperts(revived), []);
    assert.deepEqual(deadExperts([[0.5, 0.5, 0.5, 0.5], ...steps]), [3]);
  });

  it('specialization: I(domain; expert) with equal domain weights over log(min(D, E))', () => {
    const h = (p: number[]): number => -p.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0);
    const reference = (rows: number[][]): number => {
      const p = rows.map((r) => r.map((v) => v / r.reduce((a, b) => a + b, 0)));
      const marginal = p[0].map((_, e) => p.reduce((a, r) => a + r[e], 0) / p.length);
      const mi = h(marginal) - p.reduce((a, r) => a + h(r), 0) / p.length;
      return mi / Math.log(Math.min(p.length, p[0].length));
    };
    const cases: Record<string, number[]>[] = [
      { code: [3, 1], math: [1, 3] },
      { code: [0.5, 0.3, 0.2, 0], math: [0.1, 0.1, 0.4, 0.4], web: [0.25, 0.25, 0.25, 0.25] },
      { code: [1, 0, 0], math: [0, 1, 0] },
    ];
    for (const c of cases) close(specialization(c), reference(Object.values(c)), JSON.stringify(c));
    // [.75 .25] vs [.25 .75]: (ln 2 − H(.75, .25)) / ln 2.
    const hq = -(0.75 * Math.log(0.75) + 0.25 * Math.log(0.25));
    close(specialization(cases[0]), (Math.log(2) - hq) / Math.log(2));
    assert.equal(specialization({ code: [1, 0], math: [0, 1] }), 1);
    assert.equal(specialization({ code: [1, 1], math: [2, 2] }), 0);
    assert.ok(Number.isNaN(specialization({ code: [1, 1] })));
  });
});
