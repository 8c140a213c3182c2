// Extension-host benchmarks: listing a 100-shard checkpoint from headers, and tailing a 100 MB
// metrics file. Each is compared with a peer in the same run and the ratio printed:
//   - checkpoint listing vs Python `safetensors.safe_open` (keys + shapes), when a Python with
//     safetensors is found (.venv/bin/python, else python3);
//   - the incremental tailer vs the naive readFile + split + JSON.parse of the whole file.
// Run: node --import tsx bench/extension_host.ts
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadCheckpoint } from '../extension/src/checkpoints/checkpointLoader';
import { isMetricRecord } from '../extension/src/runs/records';
import { JsonlTailer } from '../extension/src/runs/tailer';
import { mixtralTensors, writeSharded } from '../test/unit/fixtures';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-bench-'));
const ms = (t0: number) => performance.now() - t0;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function benchCheckpoint(): Promise<void> {
  // Mixtral-8x7B-like layout (32 layers, 8 experts) spread over 100 shards; data is sparse.
  const dir = path.join(tmp, 'ckpt');
  const tensors = mixtralTensors(32, 8, 4096, 14336, 32000);
  writeSharded(dir, tensors, 100, { model_type: 'mixtral', num_local_experts: 8, num_experts_per_tok: 2 });
  const runs: number[] = [];
  let summary = '';
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const c = await loadCheckpoint(dir);
    runs.push(ms(t0));
    summary = `${c.tensors.length} tensors, ${(c.model.summary.totalParams / 1e9).toFixed(1)}B total, ${(c.model.summary.activeParams / 1e9).toFixed(1)}B active`;
  }
  const ours = median(runs);
  console.log(`checkpoint: 100 shards (${summary}) listed in ${ours.toFixed(1)} ms (median of 5)`);
  const python = [path.resolve('.venv/bin/python'), 'python3'].find((p) => {
    try {
      execFileSync(p, ['-c', 'import safetensors'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
  if (!python) {
    console.log('checkpoint: peer skipped (no Python with safetensors)');
    return;
  }
  const script = `
import glob, json, sys, time
from safetensors import safe_open
ts = []
for _ in range(5):
    t0 = time.perf_counter(); n = 0
    for f in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
        with safe_open(f, "np") as h:
            for k in h.keys():
                h.get_slice(k).get_shape(); n += 1
    ts.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"ms": sorted(ts)[2], "n": n}))`;
  const peer = JSON.parse(execFileSync(python, ['-c', script, dir]).toString());
  console.log(
    `checkpoint: python safetensors.safe_open ${peer.ms.toFixed(1)} ms (${peer.n} tensors, in-process, no interpreter start) → ratio peer/ours ${(peer.ms / ours).toFixed(2)}x`,
  );
}

async function benchTailer(): Promise<void> {
  const file = path.join(tmp, 'metrics.jsonl');
  const fd = fs.openSync(file, 'w');
  let size = 0;
  let n = 0;
  while (size < 100 * 2 ** 20) {
    let block = '';
    for (let k = 0; k < 2000; k++, n++) {
      block +=
        JSON.stringify({
          step: n,
          tokens: n * 4096,
          time: n * 0.1,
          split: 'train',
          loss: 3 - n * 1e-7,
          lr: 3e-4,
          lb_loss: 0.01,
          z_loss: 0.001,
          grad_norm: 1.2,
          tokens_per_s: 51234.5,
          domain: { code: 1.9, math: 2.1, prose: 2.3 },
        }) + '\n';
    }
    fs.writeSync(fd, block);
    size += Buffer.byteLength(block);
  }
  fs.closeSync(fd);
  const mb = size / 2 ** 20;

  const rss0 = process.memoryUsage().rss;
  let peakOurs = rss0;
  let t0 = performance.now();
  let count = 0;
  await new JsonlTailer(file, { accept: isMetricRecord }).poll((b) => {
    count += b.length;
    peakOurs = Math.max(peakOurs, process.memoryUsage().rss);
  });
  const ours = ms(t0);
  console.log(
    `tailer: ${mb.toFixed(0)} MB, ${count} records in ${ours.toFixed(0)} ms = ${(mb / (ours / 1000)).toFixed(0)} MB/s, RSS +${((peakOurs - rss0) / 2 ** 20).toFixed(0)} MB`,
  );

  const rss1 = process.memoryUsage().rss;
  t0 = performance.now();
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  let naive = 0;
  for (const l of lines) if (l && isMetricRecord(JSON.parse(l))) naive++;
  const peer = ms(t0);
  const peakNaive = process.memoryUsage().rss;
  console.log(
    `tailer: naive readFile+split+parse ${peer.toFixed(0)} ms (${naive} records), RSS +${((peakNaive - rss1) / 2 ** 20).toFixed(0)} MB → time ratio naive/ours ${(peer / ours).toFixed(2)}x`,
  );
  // Appends: the steady-state cost while training, 1 line per poll.
  const tailer = new JsonlTailer(file, { accept: isMetricRecord });
  await tailer.poll(() => undefined);
  const polls: number[] = [];
  for (let i = 0; i < 200; i++) {
    fs.appendFileSync(file, JSON.stringify({ step: n + i, loss: 1 }) + '\n');
    const t = performance.now();
    await tailer.poll(() => undefined);
    polls.push(ms(t));
  }
  console.log(
    `tailer: poll after a 1-line append on a ${mb.toFixed(0)} MB file: median ${median(polls).toFixed(3)} ms`,
  );
}

async function main(): Promise<void> {
  try {
    await benchCheckpoint();
    await benchTailer();
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

void main();
