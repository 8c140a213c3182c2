// Routing inspector on CPU, 512 tokens on one thread, for two models: the demo model (byte-level,
// d=128, FFN 344, 4 layers, 4 experts top-2, BAM expert-KV) and a Qwen3-0.6B-shaped one (28 layers,
// d=1024, 16 heads / 8 KV heads, head_dim 128, FFN 3072, vocab 151936, tied embeddings; random
// weights from transformers' Qwen3ForCausalLM, upcycled by `moelab upcycle --method btx` to 2 experts
// top-2 so it has routers; a byte-level BPE tokenizer.json, one token per byte). Each is exported by
// `moelab export --format onnx` (the inspection graph: the layers up to the last router, no LM head).
// Printed per model, in one table: the inspector's time (tokenize + run + assemble, after warm-up),
// the peer from the same run: PyTorch eager's full forward of the same ids (bench/inspector_peer.py),
// and the FLOPs limit: the inspection graph's FLOPs (models/flops.py) at this machine's measured
// single-thread GEMM rate at the model's FFN shape. Targets: inspector <= 0.6x PyTorch's full forward
// on the 0.6B shape; within 1.5x of the FLOPs limit on both.
// The 0.6B model is about 3.4 GB fp32 (the ONNX file as much again): --tiny builds the same pipeline
// at small dims and few reps (checks the bench, not a measurement).
// Run: node --import tsx bench/routing_inspector.ts [--tiny] [--threads N] [--reps N] [--json FILE]
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
const TINY = process.argv.includes('--tiny');
const THREADS = Number(arg('threads', '1'));
const REPS = Number(arg('reps', TINY ? '3' : '30'));
const JSON_OUT = arg('json', '');
const N_TOKENS = 512;
// The 0.6B forward takes seconds: fewer reps there.
const BIG_REPS = Math.min(REPS, TINY ? 2 : 5);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const ms = (t0: number) => performance.now() - t0;

/** Qwen3-0.6B's shape (--tiny: the same family at toy dims). */
const QWEN3 = TINY
  ? { layers: 4, hidden: 64, heads: 4, kv: 2, headDim: 16, ffn: 128, vocab: 1000, experts: 2, topK: 2 }
  : {
      layers: 28,
      hidden: 1024,
      heads: 16,
      kv: 8,
      headDim: 128,
      ffn: 3072,
      vocab: 151936,
      experts: 2,
      topK: 2,
    };

/** A random Qwen3 dense model (transformers' own classes) with a byte-level BPE tokenizer.json of the
 *  256 byte tokens only, upcycled to BTX by the CLI. */
function makeQwen3Checkpoint(root: string): string {
  const dense = path.join(root, 'qwen3-dense');
  const q = QWEN3;
  python([
    '-c',
    `
import sys, torch, transformers
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
out = Path(sys.argv[1])
cfg = transformers.Qwen3Config(vocab_size=${q.vocab}, hidden_size=${q.hidden}, intermediate_size=${q.ffn},
    num_hidden_layers=${q.layers}, num_attention_heads=${q.heads}, num_key_value_heads=${q.kv}, head_dim=${q.headDim},
    max_position_embeddings=2048, tie_word_embeddings=True)
torch.manual_seed(0)
transformers.Qwen3ForCausalLM(cfg).save_pretrained(out)
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
alphabet = pre_tokenizers.ByteLevel.alphabet()
tok.train_from_iterator(["x"], trainers.BpeTrainer(vocab_size=len(alphabet), initial_alphabet=alphabet, show_progress=False))
tok.save(str(out / "tokenizer.json"))
`,
    dense,
  ]);
  const moe = path.join(root, 'qwen3-btx');
  const experts = Array.from({ length: q.experts }, () => ['--expert', dense]).flat();
  python([
    '-m',
    'moelab',
    'upcycle',
    '--method',
    'btx',
    '--seed',
    dense,
    ...experts,
    '--top-k',
    `${q.topK}`,
    '--out',
    moe,
  ]);
  fs.rmSync(dense, { recursive: true, force: true });
  return moe;
}

interface Peer {
  torch_ms: { median: number; cpu_per_run: number };
  gemm_gflops: number;
  gemm_shape: number[];
  flops_inspector: number;
  flops_full: number;
  limit_ms_inspector: number;
  limit_ms_full: number;
}

interface Timing {
  median: number;
  p90?: number;
  cpu_per_run?: number;
}

interface Row {
  model: string;
  build_s: number;
  export_s: number;
  onnx_bytes: number;
  session_load_ms: { first: number; median_reload: number };
  route_512_ms: Timing;
  route_512_worker_ms?: Timing;
  worker_load_ms?: number;
  torch_eager_full_forward_512_ms: Timing;
  gemm_gflops: number;
  gemm_shape: number[];
  gflop_inspector: number;
  gflop_full_forward: number;
  limit_ms_inspector: number;
  limit_ms_full_forward: number;
  ratio_inspector_over_torch: number;
  ratio_inspector_over_limit: number;
}

async function benchModel(
  name: string,
  slug: string,
  root: string,
  build: (ckpt: string) => void,
  reps: number,
  worker: boolean,
): Promise<Row> {
  const ckpt = path.join(root, slug);
  const onnx = path.join(root, `${slug}-onnx`);
  let t0 = performance.now();
  build(ckpt);
  const buildS = ms(t0) / 1000;
  t0 = performance.now();
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
  for (let i = 0; i < 2; i++) {
    await loaded.runner.release();
    loaded = await loadExport(onnx, { threads: THREADS });
    loads.push(loaded.loadMs);
  }

  // Routing in-process: tokenize + run + assemble, after warm-up.
  await inspectText(text, onnx, loaded.manifest, loaded.tokenizer, loaded.runner);
  const runs: number[] = [];
  // CPU time next to wall time: on a shared machine wall time includes waiting for a core.
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    t0 = performance.now();
    const r = await inspectText(text, onnx, loaded.manifest, loaded.tokenizer, loaded.runner);
    runs.push(ms(t0));
    if (r.tokens.length !== N_TOKENS) throw new Error(`expected ${N_TOKENS} tokens, got ${r.tokens.length}`);
  }
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / reps;
  await loaded.runner.release();

  // Through the worker thread, as the editor sees it (message passing included).
  let workerRuns: number[] = [];
  let workerLoad = NaN;
  if (worker) [workerLoad, workerRuns] = await viaWorker(root, onnx, text, reps);

  // Peer and limit, in Python: PyTorch eager's full forward of the same ids, the GEMM rate, the FLOPs.
  const peer = JSON.parse(
    python(
      [
        path.join(__dirname, 'inspector_peer.py'),
        ckpt,
        '--tokens',
        `${N_TOKENS}`,
        '--threads',
        `${THREADS}`,
        '--reps',
        `${reps}`,
      ],
      text,
    ),
  ) as Peer;
  fs.rmSync(ckpt, { recursive: true, force: true });
  const onnxBytes = fs
    .readdirSync(onnx)
    .filter((f) => f.startsWith('model.onnx'))
    .reduce((n, f) => n + fs.statSync(path.join(onnx, f)).size, 0);
  fs.rmSync(onnx, { recursive: true, force: true });
  const inspector = median(runs);
  console.log(
    `  ${name}: inspector ${inspector.toFixed(1)} ms, PyTorch ${peer.torch_ms.median.toFixed(1)} ms, limit ${peer.limit_ms_inspector.toFixed(1)} ms (build ${buildS.toFixed(0)} s, export ${exportS.toFixed(0)} s)`,
  );
  return {
    model: name,
    build_s: +buildS.toFixed(1),
    export_s: +exportS.toFixed(1),
    onnx_bytes: onnxBytes,
    session_load_ms: { first: +loads[0].toFixed(1), median_reload: +median(loads.slice(1)).toFixed(1) },
    route_512_ms: {
      median: +inspector.toFixed(2),
      p90: +pct(runs, 0.9).toFixed(2),
      cpu_per_run: +cpuMs.toFixed(2),
    },
    ...(worker
      ? {
          route_512_worker_ms: {
            median: +median(workerRuns).toFixed(2),
            p90: +pct(workerRuns, 0.9).toFixed(2),
          },
          worker_load_ms: +workerLoad.toFixed(1),
        }
      : {}),
    torch_eager_full_forward_512_ms: {
      median: +peer.torch_ms.median.toFixed(2),
      cpu_per_run: +peer.torch_ms.cpu_per_run.toFixed(2),
    },
    gemm_gflops: +peer.gemm_gflops.toFixed(1),
    gemm_shape: peer.gemm_shape,
    gflop_inspector: +(peer.flops_inspector / 1e9).toFixed(2),
    gflop_full_forward: +(peer.flops_full / 1e9).toFixed(2),
    limit_ms_inspector: +peer.limit_ms_inspector.toFixed(2),
    limit_ms_full_forward: +peer.limit_ms_full.toFixed(2),
    ratio_inspector_over_torch: +(inspector / peer.torch_ms.median).toFixed(2),
    ratio_inspector_over_limit: +(inspector / peer.limit_ms_inspector).toFixed(2),
  };
}

async function viaWorker(
  root: string,
  onnx: string,
  text: string,
  reps: number,
): Promise<[number, number[]]> {
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
  const runs: number[] = [];
  try {
    let t0 = performance.now();
    await client.load(onnx);
    const load = ms(t0);
    await client.inspect(onnx, text);
    for (let i = 0; i < reps; i++) {
      t0 = performance.now();
      await client.inspect(onnx, text);
      runs.push(ms(t0));
    }
    return [load, runs];
  } finally {
    await client.dispose();
  }
}

function table(rows: Row[]): string {
  const lines = [
    '| model | inspector ms | PyTorch eager full forward ms | inspector / PyTorch | FLOPs limit ms (GFLOP @ GFLOP/s) | inspector / limit | worker ms | session load ms |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.model} | ${r.route_512_ms.median} (CPU ${r.route_512_ms.cpu_per_run}) | ${r.torch_eager_full_forward_512_ms.median} (CPU ${r.torch_eager_full_forward_512_ms.cpu_per_run}) | **${r.ratio_inspector_over_torch}x** | ${r.limit_ms_inspector} (${r.gflop_inspector} @ ${r.gemm_gflops}; full forward ${r.limit_ms_full_forward}) | **${r.ratio_inspector_over_limit}x** | ${r.route_512_worker_ms?.median ?? '-'} | ${r.session_load_ms.first} first, ${r.session_load_ms.median_reload} again |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  if (!HAVE_VENV) {
    console.log(`skipped: ${NO_VENV_REASON}`);
    return;
  }
  const root = tempDir('moelab-bench-inspector-');
  try {
    const q = QWEN3;
    const rows = [
      // The engine's default seed shape (ModelConfig defaults), as the demo upcycles it.
      await benchModel(
        'demo BAM-ekv (d=128, 4 layers, 4 experts)',
        'demo',
        root,
        (ckpt) => makeByteCheckpoint(ckpt, { hidden: 128, inner: 344, layers: 4, context: 2048 }),
        REPS,
        true,
      ),
      await benchModel(
        `Qwen3${TINY ? ' (tiny dims)' : '-0.6B shape'} BTX ${q.experts} experts top-${q.topK} (d=${q.hidden}, ${q.layers} layers, vocab ${q.vocab})`,
        'qwen3',
        root,
        (ckpt) => fs.renameSync(makeQwen3Checkpoint(root), ckpt),
        BIG_REPS,
        false,
      ),
    ];
    console.log(
      `routing inspector, ${N_TOKENS} tokens, ${THREADS} thread(s), medians${TINY ? ' (--tiny: not a measurement)' : ''}`,
    );
    console.log(table(rows));
    console.log('targets: inspector / PyTorch <= 0.6x on the 0.6B shape; inspector / limit <= 1.5x on both');
    if (JSON_OUT)
      fs.writeFileSync(JSON_OUT, JSON.stringify({ threads: THREADS, tiny: TINY, rows }, null, 2) + '\n');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
