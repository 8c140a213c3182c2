// The Weights tab's protocol messages, the analysis cache next to checkpoints, the engine
// arguments, and the architecture check of "Compare with…" (no VS Code, no browser).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { architectureMismatch, diffTensors } from '../../extension/src/checkpoints/checkpointDiff';
import type { TensorInfo } from '../../extension/src/checkpoints/safetensorsHeader';
import {
  analyzeCheckpointsArgs,
  compareArgs,
  engineInvocation,
  TaskArgError,
} from '../../extension/src/jobs/taskArgs';
import {
  cacheFiles,
  checkpointSpec,
  pairSpec,
  readCachedAnalysis,
  runSpec,
} from '../../extension/src/panels/analysisCache';
import { type EngineJobs, WeightsAnalyzer } from '../../extension/src/panels/weightsAnalysis';
import type { CompareReport, WeightReport } from '../../webview/src/protocol';
import {
  isCompareReport,
  isWeightReport,
  parseHostToRouter,
  parseRouterState,
  parseWebviewToHost,
} from '../../webview/src/protocolGuards';
import { HAVE_VENV, NO_VENV_REASON, PYTHON, REPO } from './inspectorFixtures';

// Real `moelab analyze` output on a tiny run (3 checkpoints, FFN and attention experts).
const DATA = path.join(process.cwd(), 'test/webview/data');
const analysis = JSON.parse(fs.readFileSync(path.join(DATA, 'analysis.json'), 'utf8')) as WeightReport;
const compare = JSON.parse(fs.readFileSync(path.join(DATA, 'compare.json'), 'utf8')) as CompareReport;
const target = { kind: 'run', label: 'run demo' };

/** The real report, re-labelled for other checkpoint folders (what the engine would write for them). */
const reportFor = (paths: string[]): WeightReport => {
  const r = structuredClone(analysis);
  r.checkpoints = paths.map((p, i) => ({ path: p, step: i }));
  for (const l of r.layers) {
    l.drift.steps = paths.map((_p, i) => i);
    l.drift.experts = l.drift.experts.map((e) => paths.map((_p, i) => e[i] ?? 0));
    l.drift.router = paths.map(() => 0);
    l.drift.router_norms = paths.map(() => l.router_norms);
  }
  return r;
};

const result = (report: unknown, extra: Record<string, unknown> = {}): unknown => ({
  type: 'analysisResult',
  target,
  cached: true,
  writtenAt: 1,
  report,
  ...extra,
});

describe('Weights tab messages', () => {
  it("accepts the engine's real analysis and compare JSON", () => {
    assert.ok(isWeightReport(analysis));
    assert.ok(isCompareReport(compare));
    assert.ok(parseHostToRouter(result(analysis)));
    assert.ok(parseHostToRouter(result(analysis, { compare })));
    // The near-zero router row has undefined (null) cosines: still valid.
    assert.ok(analysis.layers.some((l) => l.router_cosine.some((r) => r.includes(null))));
  });

  it('rejects reports whose arrays do not fit their declared sizes', () => {
    const mutations: [string, (r: WeightReport) => void][] = [
      ['E x E router cosine', (r) => r.layers[0].router_cosine[1].pop()],
      ['expert cosine row', (r) => Object.values(r.layers[0].expert_cosine)[0].push([])],
      ['norms length', (r) => Object.values(r.layers[0].expert_norms)[0].push(1)],
      ['drift per checkpoint', (r) => r.layers[0].drift.router.pop()],
      ['drift steps', (r) => r.layers[0].drift.steps.push(7)],
      ['NaN is not JSON', (r) => (r.layers[0].router_norms[0] = Number.NaN)],
      ['string for a number', (r) => ((r.layers[0].router_norms as unknown[])[0] = '1')],
      ['num_experts', (r) => (r.layers[0].num_experts = 0)],
      ['router kind', (r) => ((r.layers[0] as { router: string }).router = 'moe')],
      ['version', (r) => ((r as { version: number }).version = 2)],
      ['no checkpoints', (r) => (r.checkpoints = [])],
      [
        'warning experts',
        (r) =>
          (r.warnings as unknown[]).push({ layer: 0, router: 'ffn', kind: 'x', experts: [-1], message: '' }),
      ],
    ];
    for (const [what, mutate] of mutations) {
      const r = structuredClone(analysis);
      mutate(r);
      assert.equal(parseHostToRouter(result(r)), undefined, what);
    }
    const c = structuredClone(compare);
    c.tensors.pop();
    assert.equal(
      parseHostToRouter(result(analysis, { compare: c })),
      undefined,
      'num_changed must match the list',
    );
    assert.equal(
      parseHostToRouter(result(analysis, { compare: { ...compare, mode: 'analyze' } })),
      undefined,
    );
    assert.equal(parseHostToRouter(result(analysis, { target: { kind: 'folder', label: 'x' } })), undefined);
    assert.equal(parseHostToRouter(result(analysis, { cached: 'yes' })), undefined);
  });

  it("checks status messages and the init's weights field", () => {
    assert.ok(
      parseHostToRouter({
        type: 'analysisStatus',
        target,
        state: 'running',
        detail: 'x',
        job: { index: 1, count: 2 },
      }),
    );
    assert.ok(
      parseHostToRouter({ type: 'analysisStatus', target: null, state: 'unavailable', detail: 'no run' }),
    );
    assert.equal(parseHostToRouter({ type: 'analysisStatus', target, state: 'done', detail: '' }), undefined);
    assert.equal(
      parseHostToRouter({
        type: 'analysisStatus',
        target,
        state: 'running',
        detail: '',
        job: { index: 0, count: 2 },
      }),
      undefined,
    );
    assert.equal(
      parseHostToRouter({ type: 'analysisStatus', target, state: 'failed', detail: 'x'.repeat(3000) }),
      undefined,
    );
    const init = { type: 'init', panel: 'router', runIds: [], runs: [], routing: [] };
    assert.ok(parseHostToRouter(init), 'an init without weights (older host) is fine');
    assert.ok(parseHostToRouter({ ...init, weights: { target, show: true } }));
    assert.ok(parseHostToRouter({ ...init, weights: { target: null, show: false } }));
    assert.equal(parseHostToRouter({ ...init, weights: { target, show: 'yes' } }), undefined);
  });

  it('parses requestAnalysis from the webview, nothing more', () => {
    assert.deepEqual(parseWebviewToHost({ type: 'requestAnalysis', force: true, dirs: ['/etc'] }), {
      type: 'requestAnalysis',
      force: true,
    });
    assert.equal(parseWebviewToHost({ type: 'requestAnalysis' }), undefined);
    assert.equal(parseWebviewToHost({ type: 'requestAnalysis', force: 1 }), undefined);
  });

  it('restores router states from before the Weights tab, and checks its fields', () => {
    const old = { panel: 'router', runIds: [], runA: '', runB: '', router: 'all', layerFilter: '', step: -1 };
    assert.ok(parseRouterState(old));
    assert.ok(
      parseRouterState({
        ...old,
        tab: 'weights',
        weightsLayer: 3,
        weightsRouter: 'attn',
        weightsMatrix: 'q_proj',
      }),
    );
    assert.equal(parseRouterState({ ...old, tab: 'loss' }), undefined);
    assert.equal(parseRouterState({ ...old, weightsLayer: 1.5 }), undefined);
  });

  it('never throws on arbitrary values or on arbitrary edits of a real report', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        parseHostToRouter(v);
        parseHostToRouter({ type: 'analysisResult', target, cached: false, writtenAt: 0, report: v });
        parseWebviewToHost({ type: 'requestAnalysis', force: v });
        isWeightReport(v);
        isCompareReport(v);
      }),
    );
    const layerKeys = Object.keys(analysis.layers[0]);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: analysis.layers.length - 1 }),
        fc.constantFrom(...layerKeys),
        fc.anything(),
        (i, key, value) => {
          const r = structuredClone(analysis) as unknown as { layers: Record<string, unknown>[] };
          r.layers[i][key] = value;
          const ok = isWeightReport(r);
          if (ok) assert.ok(parseHostToRouter(result(r)));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('engine arguments for the Weights tab', () => {
  const base = path.resolve('/work space');
  it('passes every checkpoint as its own absolute argument, in order', () => {
    assert.deepEqual(
      analyzeCheckpointsArgs(['r/checkpoints/step-1', '-rf', '$(x) y'], 'r/analysis.json', base),
      [
        'analyze',
        '--ckpt',
        path.join(base, 'r/checkpoints/step-1'),
        '--ckpt',
        path.join(base, '-rf'),
        '--ckpt',
        path.join(base, '$(x) y'),
        '--out',
        path.join(base, 'r/analysis.json'),
      ],
    );
    assert.throws(() => analyzeCheckpointsArgs([], 'o', base), TaskArgError);
    assert.throws(() => analyzeCheckpointsArgs(['a\0b'], 'o', base), TaskArgError);
  });
  it('builds --compare A B', () => {
    assert.deepEqual(compareArgs('a', '/abs/b', 'o.json', base), [
      'analyze',
      '--compare',
      path.join(base, 'a'),
      '/abs/b',
      '--out',
      path.join(base, 'o.json'),
    ]);
  });
});

describe('Compare with…: same architecture', () => {
  const t = (name: string, shape: number[], dtype = 'F32'): TensorInfo =>
    ({ name, shape, dtype }) as unknown as TensorInfo;
  it('lets a dtype change through and names the first mismatch otherwise', () => {
    const a = [t('w', [4, 8]), t('g', [2, 8])];
    assert.equal(
      architectureMismatch('A', 'B', diffTensors(a, [t('w', [4, 8], 'BF16'), t('g', [2, 8])])),
      undefined,
    );
    const shape = architectureMismatch('A', 'B', diffTensors(a, [t('w', [4, 16]), t('g', [2, 8])]));
    assert.match(
      shape ?? '',
      /different architectures.*1 with another shape \(e\.g\. w: \[4, 8\] vs \[4, 16\]\)/,
    );
    const extra = architectureMismatch(
      'step-1',
      'bam/step-9',
      diffTensors(a, [...a, t('experts.3.w1', [4, 8])]),
    );
    assert.match(
      extra ?? '',
      /^step-1 and bam\/step-9 have different architectures.*1 only in bam\/step-9 \(e\.g\. experts\.3\.w1\)/,
    );
  });
});

describe('analysis cache next to the checkpoint', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-cache-'));
  const run = path.join(tmp, 'run');
  const ck = (step: number): string => {
    const d = path.join(run, 'checkpoints', `step-${step}`);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, 'config.json'), '{}');
    fs.writeFileSync(path.join(d, 'model.safetensors'), '');
    return d;
  };
  const dirs = [ck(100), ck(20)];
  const touch = (file: string, secondsAgo: number): void => {
    const t = new Date(Date.now() - secondsAgo * 1000);
    fs.utimesSync(file, t, t);
  };

  it("lists a run's checkpoints in step order and caches in the run folder", async () => {
    const spec = await runSpec({ id: 'r1', dir: run });
    assert.deepEqual(spec.dirs, [dirs[1], dirs[0]]);
    assert.equal(cacheFiles(spec).analysis, path.join(run, 'analysis.json'));
    assert.equal(cacheFiles(checkpointSpec(dirs[0], 'x')).analysis, path.join(dirs[0], 'analysis.json'));
    const pair = pairSpec(
      { dir: dirs[1], label: 'a', runId: 'r1' },
      { dir: dirs[0], label: 'b', runId: 'r1' },
    );
    assert.deepEqual(pair.runIds, ['r1']);
    const files = cacheFiles(pair);
    assert.match(files.analysis, new RegExp(`^${dirs[0]}/analysis-vs-[0-9a-f]{16}\\.json$`));
    assert.match(files.compare ?? '', /compare-vs-[0-9a-f]{16}\.json$/);
    // Another A gives another file; the fallback folder keys by both.
    assert.notEqual(
      cacheFiles(pairSpec({ dir: run, label: 'x' }, { dir: dirs[0], label: 'b' })).analysis,
      files.analysis,
    );
    assert.ok(cacheFiles(pair, '/storage').analysis.startsWith('/storage/analysis-'));
  });

  it('reuses a result only while it is newer than the weights and names the same checkpoints', async () => {
    const spec = await runSpec({ id: 'r1', dir: run });
    const files = cacheFiles(spec);
    for (const d of dirs) for (const f of fs.readdirSync(d)) touch(path.join(d, f), 60);
    assert.equal(await readCachedAnalysis(spec, files), undefined, 'nothing cached yet');
    fs.writeFileSync(files.analysis, JSON.stringify(reportFor(spec.dirs)));
    const hit = await readCachedAnalysis(spec, files);
    assert.ok(hit && hit.report.checkpoints.length === 2 && hit.compare === undefined);
    // A checkpoint rewritten after the analysis: stale.
    touch(path.join(dirs[0], 'model.safetensors'), 0);
    touch(files.analysis, 30);
    assert.equal(await readCachedAnalysis(spec, files), undefined);
    touch(path.join(dirs[0], 'model.safetensors'), 60);
    assert.ok(await readCachedAnalysis(spec, files));
    // A new checkpoint since: the list differs, analyze again.
    const more = await (async () => {
      ck(300);
      return runSpec({ id: 'r1', dir: run });
    })();
    for (const f of fs.readdirSync(more.dirs[2])) touch(path.join(more.dirs[2], f), 60);
    assert.equal(await readCachedAnalysis(more, cacheFiles(more)), undefined);
    // Garbage in the cache file is ignored.
    fs.writeFileSync(files.analysis, '{"version": 1');
    assert.equal(await readCachedAnalysis(spec, files), undefined);
  });

  it('needs both files, matching A and B, for a pair', async () => {
    const pair = pairSpec({ dir: dirs[1], label: 'a' }, { dir: dirs[0], label: 'b' });
    const files = cacheFiles(pair);
    fs.writeFileSync(files.analysis, JSON.stringify(reportFor(pair.dirs)));
    assert.equal(await readCachedAnalysis(pair, files), undefined, 'compare missing');
    fs.writeFileSync(files.compare ?? '', JSON.stringify({ ...compare, a: dirs[0], b: dirs[1] }));
    assert.equal(await readCachedAnalysis(pair, files), undefined, 'A and B swapped');
    fs.writeFileSync(files.compare ?? '', JSON.stringify({ ...compare, a: dirs[1], b: dirs[0] }));
    const hit = await readCachedAnalysis(pair, files);
    assert.equal(hit?.compare?.num_changed, compare.num_changed);
    fs.rmSync(tmp, { recursive: true, force: true });
  });
});

// The tiny run of test/webview/data, built with the engine's own test helpers.
const MAKE_RUN = `
import sys, torch
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from test_analyze import cfg, write_ckpt, D, F, E, L
g = torch.Generator().manual_seed(11)
t = {"model.embed_tokens.weight": torch.randn(16, D, generator=g)}
for lay in range(L):
    f = f"model.layers.{lay}.block_sparse_moe"
    t[f"{f}.gate.weight"] = torch.randn(E, D, generator=g)
    for e in range(E):
        for m, sh in (("w1", (F, D)), ("w3", (F, D)), ("w2", (D, F))):
            t[f"{f}.experts.{e}.{m}.weight"] = torch.randn(*sh, generator=g)
for i, step in enumerate((10, 20)):
    write_ckpt(Path(sys.argv[1]) / "checkpoints" / f"step-{step}", {k: v + 0.1 * i for k, v in t.items()}, cfg())
`;

describe(
  'the cache finds what the engine wrote with these arguments',
  { skip: HAVE_VENV ? false : NO_VENV_REASON },
  () => {
    it('run and pair analyses round-trip through moelab analyze', async () => {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-engine-cache-'));
      const env = { ...process.env, OMP_NUM_THREADS: '1', PYTHONPATH: path.join(REPO, 'engine') };
      const run = path.join(tmp, 'my run');
      execFileSync(PYTHON, ['-c', MAKE_RUN, run, path.join(REPO, 'engine/tests')], { env, stdio: 'pipe' });
      const engine = (args: string[]): void => {
        const inv = engineInvocation(PYTHON, args);
        execFileSync(inv.command, inv.args, { env: { ...env, ...inv.env }, stdio: 'pipe' });
      };
      const spec = await runSpec({ id: 'my run', dir: run });
      assert.equal(spec.dirs.length, 2);
      const files = cacheFiles(spec);
      engine(analyzeCheckpointsArgs(spec.dirs, files.analysis, tmp));
      const hit = await readCachedAnalysis(spec, files);
      assert.ok(hit, 'the run analysis is reused');
      assert.deepEqual(
        hit.report.checkpoints.map((c) => c.step),
        [10, 20],
      );

      const pair = pairSpec({ dir: spec.dirs[0], label: 'step-10' }, { dir: spec.dirs[1], label: 'step-20' });
      const pf = cacheFiles(pair);
      engine(compareArgs(pair.dirs[0], pair.dirs[1], pf.compare ?? '', tmp));
      engine(analyzeCheckpointsArgs(pair.dirs, pf.analysis, tmp));
      const ph = await readCachedAnalysis(pair, pf);
      assert.ok(
        ph?.compare && ph.compare.num_changed === ph.compare.num_tensors,
        'every tensor moved by 0.1',
      );
      fs.rmSync(tmp, { recursive: true, force: true });
    });
  },
);

/** Stands in for JobRunner: "runs" moelab analyze by writing what the engine would, after `delayMs`. */
class FakeEngine implements EngineJobs {
  jobs: string[][] = [];
  /** exitCode null: the task ended without an exit code (terminated). */
  constructor(
    private readonly exitCode: number | null = 0,
    private readonly delayMs = 0,
    private readonly start = true,
  ) {}
  async runEngine(_name: string, args: string[]): Promise<{ exit: Promise<number | undefined> } | undefined> {
    this.jobs.push(args);
    if (!this.start) return undefined;
    const exit = new Promise<number | undefined>((resolve) =>
      setTimeout(() => {
        if (this.exitCode === 0) {
          const out = args[args.indexOf('--out') + 1];
          if (args[1] === '--compare')
            fs.writeFileSync(out, JSON.stringify({ ...compare, a: args[2], b: args[3] }));
          else
            fs.writeFileSync(
              out,
              JSON.stringify(reportFor(args.flatMap((a, i) => (a === '--ckpt' ? [args[i + 1]] : [])))),
            );
        }
        resolve(this.exitCode ?? undefined);
      }, this.delayMs),
    );
    return { exit };
  }
}

describe('Weights tab requests on the host', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-analyzer-'));
  const makeRun = (name: string, steps: number[]): { id: string; dir: string } => {
    const dir = path.join(tmp, name);
    for (const s of steps) {
      const d = path.join(dir, 'checkpoints', `step-${s}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'config.json'), '{}');
      fs.writeFileSync(path.join(d, 'model.safetensors'), '');
      const t = new Date(Date.now() - 60_000);
      for (const f of fs.readdirSync(d)) fs.utimesSync(path.join(d, f), t, t);
    }
    return { id: name, dir };
  };
  const collect = (): {
    posted: {
      type: string;
      state?: string;
      detail?: string;
      cached?: boolean;
      job?: unknown;
      compare?: unknown;
    }[];
    post: (m: unknown) => void;
  } => {
    const posted: { type: string }[] = [];
    return { posted, post: (m: unknown) => posted.push(m as { type: string }) };
  };
  const trusted = () => true;

  it('says what to do without a target or without checkpoints', async () => {
    const a = new WeightsAnalyzer(new FakeEngine(), undefined, () => {}, trusted);
    const c = collect();
    await a.request(undefined, false, c.post);
    assert.equal(c.posted[0].state, 'unavailable');
    assert.match(c.posted[0].detail ?? '', /Open the router panel on a run/);
    await a.request(await runSpec(makeRun('empty', [])), false, c.post);
    assert.match(c.posted[1].detail ?? '', /run empty has no checkpoint yet/);
  });

  it('runs the analysis once, then answers from the cache next to the run', async () => {
    const engine = new FakeEngine();
    const a = new WeightsAnalyzer(engine, undefined, () => {}, trusted);
    const run = makeRun('r', [10, 20]);
    const spec = await runSpec(run);
    const c = collect();
    await a.request(spec, false, c.post);
    assert.deepEqual(
      c.posted.map((m) => m.state ?? m.type),
      ['running', 'analysisResult'],
    );
    assert.deepEqual(c.posted[0].job, { index: 1, count: 1 });
    assert.equal(c.posted[1].cached, false);
    assert.deepEqual(engine.jobs[0].slice(0, 3), ['analyze', '--ckpt', spec.dirs[0]]);
    assert.ok(fs.existsSync(path.join(run.dir, 'analysis.json')));
    await a.request(spec, false, c.post);
    assert.equal(engine.jobs.length, 1, 'no second job');
    assert.equal(c.posted[2].cached, true);
    await a.request(spec, true, c.post);
    assert.equal(engine.jobs.length, 2, 'Analyze again runs it again');
  });

  it('runs compare then analyze for a pair, and shares one job between two requests', async () => {
    const engine = new FakeEngine(0, 50);
    const a = new WeightsAnalyzer(engine, undefined, () => {}, trusted);
    const run = makeRun('p', [1, 2]);
    const [d1, d2] = (await runSpec(run)).dirs;
    const spec = pairSpec({ dir: d1, label: 'p/step-1' }, { dir: d2, label: 'p/step-2' });
    const c1 = collect();
    const c2 = collect();
    await Promise.all([
      a.request(spec, false, c1.post),
      new Promise((r) => setTimeout(r, 10)).then(() => a.request(spec, false, c2.post)),
    ]);
    assert.deepEqual(
      engine.jobs.map((j) => j[1]),
      ['--compare', '--ckpt'],
    );
    assert.deepEqual(
      c1.posted.map((m) => m.job),
      [{ index: 1, count: 2 }, { index: 2, count: 2 }, undefined],
    );
    assert.ok(c1.posted[2].compare, 'the result carries the changed tensors');
    assert.deepEqual(
      c2.posted.map((m) => m.state ?? m.type),
      ['running', 'analysisResult'],
    );
  });

  it('reports failures, unstarted jobs and Restricted Mode', async () => {
    const run = makeRun('f', [5]);
    const spec = checkpointSpec((await runSpec(run)).dirs[0], 'f/step-5', 'f');
    const c = collect();
    await new WeightsAnalyzer(new FakeEngine(2), undefined, () => {}, trusted).request(spec, false, c.post);
    assert.equal(c.posted[1].state, 'failed');
    assert.match(
      c.posted[1].detail ?? '',
      /exited with code 2; the terminal “MoE Lab: analyze f\/step-5” shows why/,
    );
    await new WeightsAnalyzer(new FakeEngine(null), undefined, () => {}, trusted).request(
      spec,
      false,
      c.post,
    );
    assert.match(c.posted[3].detail ?? '', /stopped before it finished/);
    await new WeightsAnalyzer(new FakeEngine(0, 0, false), undefined, () => {}, trusted).request(
      spec,
      false,
      c.post,
    );
    assert.equal(c.posted[5].state, 'none');
    const untrusted = new FakeEngine();
    await new WeightsAnalyzer(
      untrusted,
      undefined,
      () => {},
      () => false,
    ).request(spec, false, c.post);
    assert.equal(c.posted[6].state, 'unavailable');
    assert.match(c.posted[6].detail ?? '', /Restricted Mode/);
    assert.equal(untrusted.jobs.length, 0);
    // A cached result is shown in Restricted Mode too.
    await new WeightsAnalyzer(new FakeEngine(), undefined, () => {}, trusted).request(spec, false, () => {});
    const later = collect();
    await new WeightsAnalyzer(
      untrusted,
      undefined,
      () => {},
      () => false,
    ).request(spec, false, later.post);
    assert.equal(later.posted[0].type, 'analysisResult');
    fs.rmSync(tmp, { recursive: true, force: true });
  });
});
