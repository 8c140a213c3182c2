// Routing inspector on CPU: ONNX session load time, and routing 512 tokens of a demo-sized model
// (byte-level, d=128, FFN 344, 4 layers, 4 experts top-2, BAM expert-KV) after warm-up, against the peer
// in the same run: PyTorch eager on the same checkpoint and tokens, in Python (ratio printed).
// The inspector's target is < 50 ms for the 512 tokens.
// Run: node --import tsx bench/routing_inspector.ts [--threads N] [--reps N] [--json FILE]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inspectText } from '../extension/src/inspector/inspect';
import { loadExport } from '../extension/src/inspector/loader';
import { InspectorClient } from '../extension/src/inspector/workerClient';
import {
  exportOnnx,
  HAVE_VENV,
  makeByteCheckpoint,
  NO_VENV_REASON,
  python,
  tempDir,
} from '../test/unit/inspectorFixtures';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const THREADS = Number(arg('threads', '1'));
const REPS = Number(arg('reps', '30'));
const JSON_OUT = arg('json', '');
const N_TOKENS = 512;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const ms = (t0: number) => performance.now() - t0;

async function main(): Promise<void> {
  if (!HAVE_VENV) {
    console.log(`skipped: ${NO_VENV_REASON}`);
    return;
  }
  const root = tempDir('moelab-bench-inspector-');
  try {
    const ckpt = path.join(root, 'demo');
    const onnx = path.join(ckpt, 'onnx');
    let t0 = performance.now();
    // The engine's default seed shape (ModelConfig defaults), as the demo upcycles it.
    makeByteCheckpoint(ckpt, { hidden: 128, inner: 344, layers: 4, context: 2048 });
    exportOnnx(ckpt, onnx);
    const exportS = ms(t0) / 1000;
    const text =
      'def route(tokens, experts):\n    return [max(experts, key=lambda e: e.score(t)) for t in tokens]\n'
        .repeat(8)
        .slice(0, N_TOKENS);

    // Session load: routing.json + tokenizer + InferenceSession, cold (first) and warm-cache reloads.
    const loads: number[] = [];
    let loaded = await loadExport(onnx, { threads: THREADS });
    loads.push(loaded.loadMs);
    for (let i = 0; i < 4; i++) {
      await loaded.runner.release();
      loaded = await loadExport(onnx, { threads: THREADS });
      loads.push(loaded.loadMs);
    }

    // Routing in-process: tokenize + run + assemble, after warm-up.
    for (let i = 0; i < 3; i++)
      await inspectText(text, onnx, loaded.manifest, loaded.tokenizer, loaded.runner);
    const runs: number[] = [];
    // CPU time next to wall time: on a shared machine wall time includes waiting for a core.
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < REPS; i++) {
      t0 = performance.now();
      const r = await inspectText(text, onnx, loaded.manifest, loaded.tokenizer, loaded.runner);
      runs.push(ms(t0));
      if (r.tokens.length !== N_TOKENS)
        throw new Error(`expected ${N_TOKENS} tokens, got ${r.tokens.length}`);
    }
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000 / REPS;
    await loaded.runner.release();

    // Through the worker thread, as the editor sees it (message passing included).
    const bundle = path.join(root, 'inspectorWorker.js');
    const esbuild = await import('esbuild');
    const ort = require.resolve('onnxruntime-node');
    await esbuild.build({
      entryPoints: [path.resolve(__dirname, '../extension/src/inspector/worker.ts')],
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      outfile: bundle,
      logLevel: 'error',
      plugins: [
        {
          name: 'ort',
          setup: (b) => b.onResolve({ filter: /^onnxruntime-node$/ }, () => ({ path: ort, external: true })),
        },
      ],
    });
    const client = new InspectorClient(bundle, {}, THREADS);
    const workerRuns: number[] = [];
    try {
      t0 = performance.now();
      await client.load(onnx);
      const workerLoad = ms(t0);
      for (let i = 0; i < 3; i++) await client.inspect(onnx, text);
      for (let i = 0; i < REPS; i++) {
        t0 = performance.now();
        await client.inspect(onnx, text);
        workerRuns.push(ms(t0));
      }
      loads.push(workerLoad);
    } finally {
      await client.dispose();
    }

    // Peer: PyTorch eager forward of the same 512 byte ids (router probabilities only kept).
    const torchMs = JSON.parse(
      python(
        [
          '-c',
          `
import json, sys, time, torch
from moelab.io.checkpoint import load_model
torch.set_num_threads(${THREADS})
m = load_model(sys.argv[1])
ids = torch.tensor([list(sys.stdin.read().encode("utf-8"))])
t = []
with torch.inference_mode():
    for i in range(${REPS} + 3):
        if i == 3: c0 = time.process_time()
        t0 = time.perf_counter()
        probs = [r.probs() for r in m(ids).router_logits]
        if i >= 3: t.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"wall": t, "cpu": (time.process_time() - c0) * 1000 / ${REPS}}))
`,
          ckpt,
        ],
        text,
      ),
    ) as { wall: number[]; cpu: number };

    const res = {
      model:
        'byte-level BAM expert-KV, d=128, FFN 344, 4 layers, 4 experts (FFN top-2, attention soft), 8 routers',
      threads: THREADS,
      export_s: +exportS.toFixed(1),
      onnx_bytes: fs.statSync(path.join(onnx, 'model.onnx')).size,
      session_load_ms: {
        first: +loads[0].toFixed(1),
        median_reload: +median(loads.slice(1, 5)).toFixed(1),
        worker_first: +loads[5].toFixed(1),
      },
      route_512_ms: {
        median: +median(runs).toFixed(2),
        p90: +pct(runs, 0.9).toFixed(2),
        cpu_per_run: +cpuMs.toFixed(2),
      },
      route_512_worker_ms: { median: +median(workerRuns).toFixed(2), p90: +pct(workerRuns, 0.9).toFixed(2) },
      torch_eager_512_ms: {
        median: +median(torchMs.wall).toFixed(2),
        p90: +pct(torchMs.wall, 0.9).toFixed(2),
        cpu_per_run: +torchMs.cpu.toFixed(2),
      },
    };
    const ratio = median(torchMs.wall) / median(runs);
    const cpuRatio = torchMs.cpu / cpuMs;
    console.log(`routing inspector (${res.model}; ${THREADS} thread(s), ${REPS} reps)`);
    console.log(
      `  export (moelab export --format onnx): ${res.export_s} s, model.onnx ${(res.onnx_bytes / 1e6).toFixed(1)} MB`,
    );
    console.log(
      `  session load: first ${res.session_load_ms.first} ms, reload median ${res.session_load_ms.median_reload} ms, in worker ${res.session_load_ms.worker_first} ms`,
    );
    console.log(
      `  route ${N_TOKENS} tokens, in-process: median ${res.route_512_ms.median} ms, p90 ${res.route_512_ms.p90} ms, CPU ${res.route_512_ms.cpu_per_run} ms/run (target < 50 ms: ${median(runs) < 50 ? 'met' : 'MISSED'})`,
    );
    console.log(
      `  route ${N_TOKENS} tokens, via worker:  median ${res.route_512_worker_ms.median} ms, p90 ${res.route_512_worker_ms.p90} ms`,
    );
    console.log(
      `  peer PyTorch eager forward:      median ${res.torch_eager_512_ms.median} ms, p90 ${res.torch_eager_512_ms.p90} ms, CPU ${res.torch_eager_512_ms.cpu_per_run} ms/run`,
    );
    console.log(`  ratio PyTorch / inspector: ${ratio.toFixed(2)}x wall, ${cpuRatio.toFixed(2)}x CPU time`);
    if (JSON_OUT)
      fs.writeFileSync(
        JSON_OUT,
        JSON.stringify(
          {
            ...res,
            ratio_torch_over_inspector: +ratio.toFixed(2),
            cpu_ratio_torch_over_inspector: +cpuRatio.toFixed(2),
          },
          null,
          2,
        ) + '\n',
      );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
