// Real tiny models for the inspector tests: checkpoints made by the engine (Python one-liners in
// .venv), exported with `python -m moelab export`, and routing computed by PyTorch for reference.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '../..');
export const PYTHON = path.join(REPO, '.venv', 'bin', 'python');
export const HAVE_VENV = existsSync(PYTHON);
export const NO_VENV_REASON = `${PYTHON} is missing: create the engine venv (make test does) to run the ONNX inspector tests`;

const ENV = { ...process.env, OMP_NUM_THREADS: '1', PYTHONPATH: path.join(REPO, 'engine') };

export function python(args: string[], input?: string): string {
  return execFileSync(PYTHON, args, {
    cwd: REPO,
    env: ENV,
    input,
    encoding: 'utf8',
    maxBuffer: 256 << 20,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A byte-level BAM expert-KV checkpoint (soft attention routers, top-2 FFN) of the demo shape,
 *  scaled down; router weights enlarged so the top expert is far from ties. */
export function makeByteCheckpoint(
  dir: string,
  opts: { hidden?: number; inner?: number; layers?: number; context?: number } = {},
): void {
  const { hidden = 32, inner = hidden * 2, layers = 2, context = 48 } = opts;
  python([
    '-c',
    `
import sys, torch
from pathlib import Path
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM
from moelab.io.checkpoint import save_model
torch.manual_seed(0)
L = ${layers}
cfg = ModelConfig(vocab_size=256, hidden_size=${hidden}, intermediate_size=${inner}, num_hidden_layers=L,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=${context}, model_type="moelab",
    moe=MoEConfig(num_experts=4, top_k=2, moe_layers=list(range(L)), attn_experts=True, method="bam-ekv"))
m = MoELabForCausalLM(cfg)
with torch.no_grad():
    for n, p in m.named_parameters():
        if n.endswith(("gate.weight", "router.weight")): p.normal_(0, 1.0)
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True); save_model(m, out)
`,
    dir,
  ]);
}

/** A sparse top-2 checkpoint with a Hugging Face byte-level BPE tokenizer.json trained here. */
export function makeHfCheckpoint(dir: string): void {
  python([
    '-c',
    `
import sys, torch
from pathlib import Path
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM
from moelab.io.checkpoint import save_model
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
corpus = ["def add(a, b):\\n    return a + b\\n", "The quick brown fox jumps over the lazy dog.", "12 + 30 = 42; 7 * 6 = 42",
          "Mixture of experts routes every token to a few experts."] * 20
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
tok.save(str(out / "tokenizer.json"))
torch.manual_seed(1)
cfg = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, model_type="moelab",
    moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1], method="sparse"))
m = MoELabForCausalLM(cfg)
with torch.no_grad():
    for n, p in m.named_parameters():
        if n.endswith("gate.weight"): p.normal_(0, 1.0)
save_model(m, out)
`,
    dir,
  ]);
}

export function exportOnnx(ckpt: string, out: string): void {
  python(['-m', 'moelab', 'export', '--ckpt', ckpt, '--format', 'onnx', '--out', out, '--no-verify']);
}

export interface ReferenceCase {
  text: string;
  ids: number[];
  windows: { start: number; end: number; keepFrom: number }[];
}

export interface Reference {
  /** The ids the engine's tokenizer (UTF-8 bytes, or the tokenizers library) gives for the text. */
  ids: number[];
  /** "L0.ffn" -> [tokens][experts], assembled from the same windows the inspector ran. */
  probs: Record<string, number[][]>;
}

/** PyTorch routing of each case's ids in its windows, and Python's own tokenization of its text. */
export function pythonReference(ckpt: string, cases: ReferenceCase[]): Reference[] {
  const out = python(
    [
      '-c',
      `
import json, sys, torch
from pathlib import Path
from moelab.io.checkpoint import load_model
ckpt = Path(sys.argv[1])
m = load_model(ckpt)
tok = None
if (ckpt / "tokenizer.json").exists():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
res = []
for case in json.loads(sys.stdin.read()):
    ids = tok.encode(case["text"]).ids if tok else list(case["text"].encode("utf-8"))
    probs = {}
    for w in case["windows"]:
        x = torch.tensor([case["ids"][w["start"]:w["end"]]])
        with torch.no_grad():
            for r in m(x).router_logits:
                probs.setdefault(f"L{r.layer}.{r.kind}", []).extend(r.probs()[w["keepFrom"] - w["start"]:].tolist())
    res.append({"ids": ids, "probs": probs})
print(json.dumps(res))
`,
      ckpt,
    ],
    JSON.stringify(cases),
  );
  return JSON.parse(out) as Reference[];
}
