// The inspector against real exports: onnxruntime-node in TypeScript vs PyTorch in Python.
import assert from 'node:assert/strict';
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InspectorError } from '../../extension/src/inspector/errors';
import { inspectText } from '../../extension/src/inspector/inspect';
import { loadExport, type LoadedExport } from '../../extension/src/inspector/loader';
import { routerKey, type InspectionResult } from '../../extension/src/inspector/result';
import { planWindows } from '../../extension/src/inspector/windows';
import { InspectorClient } from '../../extension/src/inspector/workerClient';
import {
  exportOnnx,
  HAVE_VENV,
  makeByteCheckpoint,
  makeHfCheckpoint,
  NO_VENV_REASON,
  pythonReference,
  REPO,
  tempDir,
} from './inspectorFixtures';

const TOL = 1e-4;

/** The worker bundled as esbuild.mjs bundles it, into a temp dir; onnxruntime-node stays
 *  external, resolved to this checkout's copy. */
async function bundleWorker(dir: string): Promise<string> {
  const outfile = path.join(dir, 'inspectorWorker.js');
  const ort = require.resolve('onnxruntime-node');
  await esbuild.build({
    entryPoints: [path.join(REPO, 'extension/src/inspector/worker.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outfile,
    logLevel: 'error',
    plugins: [
      {
        name: 'ort',
        setup: (b) => b.onResolve({ filter: /^onnxruntime-node$/ }, () => ({ path: ort, external: true })),
      },
    ],
  });
  return outfile;
}

function compare(result: InspectionResult, want: Record<string, number[][]>): void {
  assert.deepEqual(result.routers.map(routerKey).sort(), Object.keys(want).sort());
  for (const r of result.routers) {
    const rows = want[routerKey(r)];
    assert.equal(rows.length, result.tokens.length);
    rows.forEach((row, t) => {
      const got = Array.from(r.probs.subarray(t * r.numExperts, (t + 1) * r.numExperts));
      const diff = Math.max(...row.map((p, e) => Math.abs(p - got[e])));
      assert.ok(diff < TOL, `${routerKey(r)} token ${t}: |Δ| ${diff}`);
      assert.equal(
        got.indexOf(Math.max(...got)),
        row.indexOf(Math.max(...row)),
        `${routerKey(r)} token ${t}: top expert`,
      );
    });
  }
}

describe('inspector on real ONNX exports', { skip: HAVE_VENV ? false : NO_VENV_REASON }, () => {
  let root = '';
  let byteDir = '';
  let hfDir = '';
  let bytes: LoadedExport;
  let hf: LoadedExport;

  before(async () => {
    root = tempDir('moelab-inspector-');
    makeByteCheckpoint(path.join(root, 'bam'), { context: 48 });
    exportOnnx(path.join(root, 'bam'), (byteDir = path.join(root, 'bam', 'onnx')));
    makeHfCheckpoint(path.join(root, 'sparse'));
    exportOnnx(path.join(root, 'sparse'), (hfDir = path.join(root, 'sparse', 'onnx')));
    bytes = await loadExport(byteDir, { threads: 1 });
    hf = await loadExport(hfDir, { threads: 1 });
  });
  after(async () => {
    await bytes?.runner.release();
    await hf?.runner.release();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('byte-level BAM: routing equals PyTorch, in one window and in several', async () => {
    const short = 'def f(x): return x * 2  # ok é';
    const long = 'The router picks experts for every byte. '.repeat(4) + 'ünïcödé 🎉';
    const results = [];
    for (const text of [short, long])
      results.push(await inspectText(text, byteDir, bytes.manifest, bytes.tokenizer, bytes.runner));
    assert.equal(results[0].windows, 1);
    assert.ok(results[1].windows >= 3, `windows: ${results[1].windows}`);
    const ref = pythonReference(
      path.join(root, 'bam'),
      results.map((r, i) => ({
        text: [short, long][i],
        ids: r.tokens.map((t) => t.id),
        windows: planWindows(r.tokens.length, r.maxContext),
      })),
    );
    results.forEach((r, i) => {
      assert.deepEqual(
        r.tokens.map((t) => t.id),
        ref[i].ids,
      );
      compare(r, ref[i].probs);
    });
    assert.deepEqual(results[0].routers.map(routerKey), ['L0.attn', 'L0.ffn', 'L1.attn', 'L1.ffn']);
    assert.equal(results[0].routers[0].topK, 0);
  });

  it('Hugging Face tokenizer: same ids as Python tokenizers, same routing as PyTorch', async () => {
    const text = 'def add(a, b):\n    return a + b  # Mixture of experts';
    const r = await inspectText(text, hfDir, hf.manifest, hf.tokenizer, hf.runner);
    assert.equal(r.tokenizer, 'hf');
    const [ref] = pythonReference(path.join(root, 'sparse'), [
      { text, ids: r.tokens.map((t) => t.id), windows: planWindows(r.tokens.length, r.maxContext) },
    ]);
    assert.deepEqual(
      r.tokens.map((t) => t.id),
      ref.ids,
    );
    compare(r, ref.probs);
    assert.ok(r.tokens.length < text.length, 'BPE merged some bytes');
  });

  it('runs in the bundled worker thread with one cached session per export', async () => {
    const client = new InspectorClient(await bundleWorker(root), {}, 1);
    try {
      const text = 'hello worker';
      const first = await client.inspect(byteDir, text);
      const second = await client.inspect(byteDir, text);
      assert.equal(first.info.cached, false);
      assert.equal(second.info.cached, true);
      const direct = await inspectText(text, byteDir, bytes.manifest, bytes.tokenizer, bytes.runner);
      assert.deepEqual(Array.from(second.result.routers[1].probs), Array.from(direct.routers[1].probs));
      await assert.rejects(
        client.inspect(path.join(root, 'nowhere'), 'x'),
        (e: Error) => e instanceof InspectorError && /routing\.json: missing/.test(e.message),
      );
    } finally {
      await client.dispose();
    }
  });

  it('bad exports fail with one clear message', async () => {
    const copy = (name: string) => {
      const d = path.join(root, name);
      fs.cpSync(byteDir, d, { recursive: true });
      return d;
    };
    const corrupt = copy('corrupt');
    fs.writeFileSync(path.join(corrupt, 'model.onnx'), Buffer.from('definitely not protobuf'.repeat(20)));
    const mismatched = copy('mismatched');
    fs.copyFileSync(path.join(hfDir, 'model.onnx'), path.join(mismatched, 'model.onnx'));
    const noTok = copy('notok');
    fs.rmSync(path.join(noTok, 'moelab_tokenizer.json'));
    const noModel = copy('nomodel');
    fs.rmSync(path.join(noModel, 'model.onnx'));
    // Hostile variants of a real model: truncated, empty, bytes flipped at fixed-seed spots, a folder.
    const real = fs.readFileSync(path.join(byteDir, 'model.onnx'));
    const truncated = copy('truncated');
    fs.writeFileSync(path.join(truncated, 'model.onnx'), real.subarray(0, Math.floor(real.length / 2)));
    const empty = copy('empty');
    fs.writeFileSync(path.join(empty, 'model.onnx'), Buffer.alloc(0));
    const flipped = copy('flipped');
    const bytes = Buffer.from(real);
    let seed = 42;
    for (let i = 0; i < 64; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      bytes[seed % Math.min(bytes.length, 4096)] ^= 0xff; // the graph's header and first nodes
    }
    fs.writeFileSync(path.join(flipped, 'model.onnx'), bytes);
    const folder = copy('folder');
    fs.rmSync(path.join(folder, 'model.onnx'));
    fs.mkdirSync(path.join(folder, 'model.onnx'));
    for (const dir of [truncated, empty, flipped, folder]) {
      const t0 = performance.now();
      await assert.rejects(loadExport(dir, { threads: 1 }), (e: Error) => {
        assert.ok(e instanceof InspectorError, `${dir}: ${e}`);
        assert.match(e.message, new RegExp(`${path.basename(dir)}/model\\.onnx: `));
        assert.ok(!e.message.includes('\n'), e.message);
        return true;
      });
      assert.ok(performance.now() - t0 < 20_000, `${dir}: took ${performance.now() - t0} ms`);
    }
    const cases: [string, RegExp][] = [
      [corrupt, /corrupt\/model\.onnx: not a model onnxruntime can load/],
      [
        mismatched,
        /mismatched\/model\.onnx: does not match routing\.json beside it \(missing outputs router_probs\.L0\.attn/,
      ],
      [noTok, /notok\/moelab_tokenizer\.json: tokenizer file missing/],
      [noModel, /nomodel\/model\.onnx: missing/],
    ];
    for (const [dir, msg] of cases) {
      await assert.rejects(loadExport(dir, { threads: 1 }), (e: Error) => {
        assert.ok(e instanceof InspectorError, `${dir}: ${e}`);
        assert.match(e.message, msg);
        assert.ok(!e.message.includes('\n'), e.message);
        return true;
      });
    }
  });
});
