"""`moelab eval --tasks` runs lm-evaluation-harness on the checkpoint's transformers model and tokenizer:
its scores equal lm_eval's own, run directly on the same checkpoint (a local task, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_tiny import make_hf, save_hf
from hf_tokenizer import save_tokenizer

from moelab.cli import main

pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

TASK = "moelab_tiny_mc"
VOCAB = 320


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    """A multiple-choice task of the user's own: a YAML and a JSONL beside it."""
    d = tmp_path_factory.mktemp("tasks")
    with (d / "data.jsonl").open("w") as f:
        for i in range(12):
            f.write(
                json.dumps(
                    {
                        "question": f"the quick brown fox {i} jumps over the",
                        "answer": i % 3,
                        "choices": ["lazy dog", "red cat", "blue sky of 42"],
                    }
                )
                + "\n"
            )
    (d / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / "data.jsonl"}
test_split: test
fewshot_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    return d


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    dense = save_hf(make_hf("llama", seed=3, vocab_size=VOCAB, eos_token_id=2), root / "dense")
    save_tokenizer(dense)
    mixtral = root / "mixtral"
    assert (
        main(
            [
                "upcycle",
                "--method",
                "sparse",
                "--seed",
                str(dense),
                "--num-experts",
                "2",
                "--top-k",
                "1",
                "--moe-layers",
                "all",
                "--router-seed",
                "5",
                "--out",
                str(mixtral),
            ]
        )
        == 0
    )
    assert json.loads((mixtral / "config.json").read_text())["model_type"] == "mixtral"
    # BAM: model_type moelab, loaded through its own modeling file (trust_remote_code).
    bam = root / "bam"
    assert (
        main(
            [
                "upcycle",
                "--method",
                "bam-ekv",
                "--seed",
                str(dense),
                "--expert",
                str(dense),
                "--expert",
                str(dense),
                "--moe-layers",
                "all",
                "--router-seed",
                "5",
                "--out",
                str(bam),
            ]
        )
        == 0
    )
    assert json.loads((bam / "config.json").read_text())["model_type"] == "moelab"
    return {"dense": dense, "mixtral": mixtral, "bam": bam}


def lm_eval_directly(ckpt: Path, tasks: Path, **kw) -> dict[str, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype="float32", trust_remote_code=True)
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, **kw)
    return res["results"][TASK]


@pytest.mark.parametrize("kind", ["dense", "mixtral", "bam"])
def test_scores_equal_lm_evals_own(checkpoints, tasks, tmp_path, kind):
    ckpt = checkpoints[kind]
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(ckpt),
                "--tasks",
                TASK,
                "--include-path",
                str(tasks),
                "--num-fewshot",
                "1",
                "--limit",
                "8",
                "--batch-size",
                "4",
                "--batches",
                "1",
                "--seq-len",
                "16",
                "--device",
                "cpu",
                "--no-routing",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ev = json.loads(out.read_text())
    assert set(ev["domains"]) == {"code", "math", "prose"}  # the perplexity is still there
    ours = ev["lm_eval"]["tasks"][TASK]
    theirs = lm_eval_directly(ckpt, tasks, num_fewshot=1, limit=8)
    assert ours["acc,none"] == theirs["acc,none"] and ours["acc_norm,none"] == theirs["acc_norm,none"]
    assert ev["lm_eval"]["num_fewshot"] == 1 and ev["lm_eval"]["limit"] == 8


def test_eval_stage_of_an_experiment_scores_tasks(checkpoints, tasks, tmp_path):
    exp = {
        "name": "x",
        "out": "runs",
        "device": "cpu",
        "threads": 1,
        "data": {"seq_len": 16, "synthetic_eval_chars": 4000, "synthetic_train_chars": 4000},
        "defaults": {"batch_size": 4, "eval_batches": 1},
        "stages": [
            {"kind": "dense", "init": str(checkpoints["dense"]), "steps": 0},
            {"kind": "eval", "tasks": [TASK], "include_path": str(tasks), "limit": 6, "num_fewshot": 0},
        ],
    }
    (tmp_path / "x.json").write_text(json.dumps(exp))
    assert main(["run", str(tmp_path / "x.json"), "--quiet"]) == 0
    ev = json.loads((tmp_path / "runs" / "x-eval" / "eval.json").read_text())
    ours = ev["models"]["seed"]["lm_eval"]["tasks"][TASK]
    assert (
        ours["acc,none"] == lm_eval_directly(checkpoints["dense"], tasks, num_fewshot=0, limit=6)["acc,none"]
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("upcycle ")]
    assert len(lines) == 1 and lines[0].startswith("moelab: error: ") and "Traceback" not in err, err
    return lines[0]


def test_byte_level_checkpoint_is_refused_in_one_line(tmp_path, capsys, tasks):
    from moelab.data.tokenizer import ByteTokenizer
    from moelab.io.checkpoint import save_model
    from moelab.models.config import ModelConfig
    from moelab.models.model import MoELabForCausalLM

    ckpt = tmp_path / "bytes"
    ckpt.mkdir()
    save_model(
        MoELabForCausalLM(ModelConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1)), ckpt
    )
    ByteTokenizer().save(ckpt)
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "--tasks", TASK, "--include-path", str(tasks)]) == 1
    line = one_line_error(capsys)
    assert str(ckpt) in line and "byte-level" in line and "tokenizer.json" in line


def test_unknown_task_and_bad_options_are_one_line(checkpoints, tasks, capsys):
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(checkpoints["dense"]),
                "--tasks",
                "no_such_task_xyz",
                "--include-path",
                str(tasks),
                "--device",
                "cpu",
                "--batches",
                "1",
                "--seq-len",
                "16",
            ]
        )
        == 1
    )
    assert "no_such_task_xyz" in one_line_error(capsys)
    assert main(["eval", "--ckpt", str(checkpoints["dense"]), "--tasks", TASK, "--num-fewshot", "-1"]) == 1
    assert "num_fewshot" in one_line_error(capsys)
