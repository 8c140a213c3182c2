import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { modelChoices } from '../../extension/src/inspector/discovery';
import { InspectorError } from '../../extension/src/inspector/errors';
import { inspectText, type RouterRunner } from '../../extension/src/inspector/inspect';
import { parseManifest, type RoutingManifest } from '../../extension/src/inspector/manifest';
import { ByteTokenizer } from '../../extension/src/inspector/byteTokenizer';
import { expertBackground, expertColor } from '../../extension/src/inspector/palette';
import { topExperts, type InspectionResult } from '../../extension/src/inspector/result';
import {
  colourPlan,
  defaultRouter,
  groupAt,
  hoverMarkdown,
  loadSummary,
  tokenGroups,
} from '../../extension/src/inspector/view';
import { planWindows } from '../../extension/src/inspector/windows';

const MANIFEST = {
  format: 'moelab-routing',
  version: 1,
  model: 'model.onnx',
  model_type: 'moelab',
  method: 'bam-ekv',
  source_checkpoint: '/ck',
  max_context: 8,
  vocab_size: 256,
  num_layers: 1,
  input: { name: 'input_ids', dtype: 'int64', shape: ['batch', 'seq'] },
  outputs: [],
  routers: [
    { layer: 0, kind: 'attn', output: 'router_probs.L0.attn', num_experts: 3, top_k: 0 },
    { layer: 0, kind: 'ffn', output: 'router_probs.L0.ffn', num_experts: 4, top_k: 2 },
  ],
  tokenizer: { kind: 'byte-level', file: 'moelab_tokenizer.json', vocab_size: 256 },
};

describe('planWindows', () => {
  it('is one window when the text fits', () => {
    assert.deepEqual(planWindows(5, 8), [{ start: 0, end: 5, keepFrom: 0 }]);
    assert.deepEqual(planWindows(0, 8), []);
  });

  it('keeps every token exactly once, with at least `overlap` tokens of left context after the first window', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 1, max: 600 }),
        fc.double({ min: 0, max: 0.99, noNaN: true }),
        (n, ctx, f) => {
          const overlap = Math.floor(f * ctx);
          const ws = planWindows(n, ctx, overlap);
          let next = 0;
          for (const [i, w] of ws.entries()) {
            assert.ok(w.end - w.start <= ctx && w.end > w.keepFrom && w.keepFrom >= w.start);
            assert.equal(w.keepFrom, next);
            if (i > 0) assert.equal(w.keepFrom - w.start, overlap);
            next = w.end;
          }
          assert.equal(next, n);
        },
      ),
    );
  });

  it('rejects an overlap that would never advance', () => {
    assert.throws(() => planWindows(10, 4, 4), RangeError);
  });
});

describe('parseManifest', () => {
  it('reads what moelab export writes', () => {
    const m = parseManifest(JSON.stringify(MANIFEST), 'routing.json');
    assert.equal(m.maxContext, 8);
    assert.deepEqual(m.routers[1], {
      layer: 0,
      kind: 'ffn',
      output: 'router_probs.L0.ffn',
      numExperts: 4,
      topK: 2,
    });
    assert.equal(m.tokenizer.kind, 'byte-level');
  });

  const bad: [string, unknown, RegExp][] = [
    ['not JSON', '{', /r\.json: invalid JSON/],
    ['another format', { ...MANIFEST, format: 'x' }, /not a moelab-routing manifest/],
    ['a newer version', { ...MANIFEST, version: 2 }, /version 2 is not supported/],
    [
      'a bad router kind',
      { ...MANIFEST, routers: [{ ...MANIFEST.routers[0], kind: 'moe' }] },
      /routers\[0\]: kind "moe"/,
    ],
    ['top_k > experts', { ...MANIFEST, routers: [{ ...MANIFEST.routers[0], top_k: 9 }] }, /top_k 9/],
    ['no context', { ...MANIFEST, max_context: 0 }, /"max_context" must be positive/],
    [
      'an unknown tokenizer',
      { ...MANIFEST, tokenizer: { kind: 'spm', file: 'x', vocab_size: 1 } },
      /tokenizer\.kind/,
    ],
  ];
  for (const [what, value, msg] of bad) {
    it(`rejects ${what} with one message naming the file`, () => {
      assert.throws(
        () => parseManifest(typeof value === 'string' ? value : JSON.stringify(value), '/e/r.json'),
        (e: Error) => {
          assert.ok(e instanceof InspectorError);
          assert.match(e.message, /^\/e\/r\.json/);
          assert.match(e.message, msg);
          assert.ok(!e.message.includes('\n'));
          return true;
        },
      );
    });
  }
});

/** A fake model: expert = (token id + position-in-window) mod E, so windows are visible in the result. */
class FakeRunner implements RouterRunner {
  calls: number[][] = [];
  constructor(private readonly m: RoutingManifest) {}
  async run(ids: number[]): Promise<Map<string, Float32Array>> {
    this.calls.push(ids);
    const out = new Map<string, Float32Array>();
    for (const r of this.m.routers) {
      const p = new Float32Array(ids.length * r.numExperts).fill(0.1 / r.numExperts);
      ids.forEach((id, t) => (p[t * r.numExperts + ((id + t) % r.numExperts)] = 0.9));
      out.set(r.output, p);
    }
    return out;
  }
}

describe('inspectText', () => {
  const manifest = parseManifest(JSON.stringify(MANIFEST), 'routing.json');

  it('runs long text in windows and keeps each token from the window with most context', async () => {
    const runner = new FakeRunner(manifest);
    const text = 'abcdefghijklmnopqrstu'; // 21 tokens, context 8, overlap 2
    const r = await inspectText(text, '/e', manifest, new ByteTokenizer(), runner);
    assert.equal(r.windows, 4);
    assert.deepEqual(
      runner.calls.map((c) => c.length),
      [8, 8, 8, 3],
    );
    const windows = planWindows(21, 8);
    for (let t = 0; t < 21; t++) {
      const w = windows.find((x) => t >= x.keepFrom && t < x.end)!;
      const id = text.charCodeAt(t);
      assert.equal(topExperts(r.routers[1], t, 1)[0].expert, (id + t - w.start) % 4, `token ${t}`);
    }
    assert.equal(r.tokens[3].display, 'd');
    assert.equal(r.truncated, 0);
  });

  it('cuts at maxTokens and says how many were left out', async () => {
    const r = await inspectText(
      'x'.repeat(30),
      '/e',
      manifest,
      new ByteTokenizer(),
      new FakeRunner(manifest),
      { maxTokens: 10 },
    );
    assert.equal(r.tokens.length, 10);
    assert.equal(r.truncated, 20);
  });

  it('refuses a dense model and out-of-vocabulary ids with one message', async () => {
    const dense = { ...manifest, routers: [] };
    await assert.rejects(
      inspectText('a', '/e', dense, new ByteTokenizer(), new FakeRunner(dense)),
      /no routers/,
    );
    const small = { ...manifest, vocabSize: 100 };
    await assert.rejects(
      inspectText('é', '/e', small, new ByteTokenizer(), new FakeRunner(small)),
      /outside the model's vocabulary \(100\)/,
    );
  });
});

describe('view helpers', () => {
  const manifest = parseManifest(JSON.stringify(MANIFEST), 'routing.json');
  const get = () => inspectText('aé b', '/e', manifest, new ByteTokenizer(), new FakeRunner(manifest));

  it('groups the bytes of one character and colours by the last byte', async () => {
    const r: InspectionResult = await get();
    const g = tokenGroups(r);
    assert.deepEqual(
      g.map((x) => [x.start, x.end, x.tokens]),
      [
        [0, 1, [0]],
        [1, 2, [1, 2]],
        [2, 3, [3]],
        [3, 4, [4]],
      ],
    );
    const plan = colourPlan(g, r.routers[1]);
    const expertOfE = (0xa9 + 2) % 4;
    assert.ok(plan.get(expertOfE)!.some(([a, b]) => a === 1 && b === 2));
    assert.equal(groupAt(g, 1)!.tokens.length, 2);
    assert.equal(groupAt(g, 4), undefined);
  });

  it('hover lists every router with its top-k (soft: strongest few) and marks the chosen one', async () => {
    const r = await get();
    const md = hoverMarkdown(r, tokenGroups(r)[0], 1);
    assert.match(md, /\*\*Layer 0 · FFN\*\*/);
    assert.match(md, /Layer 0 · attention \| soft over 3/);
    assert.match(md, /top-2 of 4 \| <span style="color:#[0-9A-F]{6};">■<\/span> E1 0\.90 · /);
    assert.equal(defaultRouter(r), 1);
    assert.equal(defaultRouter(r, 'L0.attn'), 0);
    assert.match(loadSummary(r, r.routers[1]), /^E0 \d+% · E1 \d+% · E2 \d+% · E3 \d+%$/);
  });

  it('palette colours are distinct and translucent backgrounds keep the hue', () => {
    assert.equal(new Set(Array.from({ length: 12 }, (_, e) => expertColor(e))).size, 12);
    assert.equal(expertBackground(0), '#E69F004D');
  });
});

describe('modelChoices', () => {
  it('lists exports (last used first) and only checkpoints without an export', () => {
    const c = modelChoices(
      [
        { kind: 'export', dir: '/w/a/onnx' },
        { kind: 'export', dir: '/w/exports/b', source: '/w/b' },
      ],
      ['/w/a', '/w/b', '/w/c'],
      '/w/exports/b',
    );
    assert.deepEqual(
      c.map((x) => `${x.kind}:${x.dir}`),
      ['export:/w/exports/b', 'export:/w/a/onnx', 'checkpoint:/w/c'],
    );
    assert.equal(c[2].kind === 'checkpoint' && c[2].exportDir, '/w/c/onnx');
  });
});
