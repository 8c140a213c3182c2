"""Benchmark scores from lm-evaluation-harness (`lm_eval`) for any checkpoint MoE Lab reads.

The checkpoint is run as transformers runs it (`AutoModelForCausalLM.from_pretrained`, with
trust_remote_code for the engine's own model_type) with its own tokenizer (`AutoTokenizer`), handed
to lm_eval's `HFLM` as a model instance: the scores are what anyone loading the checkpoint gets.
Byte-level checkpoints (the demo's) have no Hugging Face tokenizer and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moelab.data.tokenizer import HF_FILE, detect
from moelab.errors import CheckpointError, ConfigError
from moelab.io.checkpoint import load_config

# Per-task entries of lm_eval's results that are labels, not scores.
_LABELS = ("alias", "name", "sample_len", " ")


@dataclass
class HarnessConfig:
    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None  # None: each task's own default
    limit: float | None = None  # documents per task (a fraction when < 1); None: all
    batch_size: int = 8
    include_path: str = ""  # a directory of the user's own task YAMLs

    def validate(self, where: str = "") -> None:
        p = f"{where}." if where else "--"
        if not self.tasks or any(not t.strip() for t in self.tasks):
            raise ConfigError(f"{p}tasks: give task names, e.g. hellaswag,arc_easy")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ConfigError(f"{p}num_fewshot: must be 0 or more")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"{p}limit: must be positive")
        if self.batch_size < 1:
            raise ConfigError(f"{p}batch_size: must be at least 1")
        if self.include_path and not Path(self.include_path).expanduser().is_dir():
            raise ConfigError(f"{p}include_path: {self.include_path}: not a directory")


def _lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(
            "tasks: lm-evaluation-harness is not installed (pip install 'moelab[eval]')"
        ) from None
    return lm_eval, HFLM, TaskManager


def check_hf_tokenizer(ckpt: Path) -> None:
    """lm-eval feeds text through the checkpoint's Hugging Face tokenizer: refuse one without."""
    if detect(ckpt, load_config(ckpt).vocab_size).kind != "hf":
        raise ConfigError(
            f"{ckpt}: a byte-level checkpoint has no Hugging Face tokenizer ({HF_FILE}), which "
            "lm-eval needs; evaluate it with --data (per-domain perplexity) instead"
        )


def load_hf(ckpt: Path, device: str) -> tuple[Any, Any]:
    """The checkpoint's transformers model and tokenizer, as any transformers user loads them."""
    ckpt = Path(ckpt)
    check_hf_tokenizer(ckpt)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the CLI's stderr is for its own lines
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            ckpt, trust_remote_code=True, dtype="float32"
        )
        tok = transformers.AutoTokenizer.from_pretrained(ckpt, trust_remote_code=True)
    except Exception as e:  # transformers raises many types; the first line says what is wrong
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{ckpt}: transformers cannot load it ({first})") from None
    # transformers' decorated PreTrainedModel.to hides nn.Module.to's signature from type checkers.
    return model.to(device).eval(), tok  # type: ignore[arg-type]


def task_manager(hc: HarnessConfig) -> Any:
    """lm_eval's index of the tasks, after checking that every task of `hc` is in it. Tasks all found
    in include_path are looked up there alone: indexing lm-eval's thousands of built-in YAMLs costs more
    than a small evaluation."""
    hc.validate()
    _, _, TaskManager = _lm_eval()
    if hc.include_path:
        own = TaskManager(include_path=str(Path(hc.include_path).expanduser()), include_defaults=False)
        if all(own.match_tasks([t]) for t in hc.tasks):
            return own
    manager = TaskManager(include_path=str(Path(hc.include_path).expanduser()) if hc.include_path else None)
    unknown = [t for t in hc.tasks if not manager.match_tasks([t])]
    if unknown:
        where = f" (nor in {hc.include_path})" if hc.include_path else ""
        raise ConfigError(f"tasks: {', '.join(unknown)}: no such lm-eval task{where}")
    return manager


def run_harness(ckpt: Path, hc: HarnessConfig, device: str = "cpu", manager: Any = None) -> dict[str, Any]:
    """{"tasks": {task: {metric: value}}, "num_fewshot", "limit", "lm_eval_version"}; `manager` is
    task_manager(hc) when the caller already made it."""
    manager = manager or task_manager(hc)
    lm_eval, HFLM, _ = _lm_eval()
    model, tok = load_hf(ckpt, device)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=hc.batch_size, device=device)
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(hc.tasks),
        num_fewshot=hc.num_fewshot,
        limit=hc.limit,
        task_manager=manager,
        log_samples=False,
    )
    scores = {
        task: {k: v for k, v in r.items() if k not in _LABELS and isinstance(v, (int, float))}
        for task, r in res["results"].items()
    }
    return {
        "tasks": scores,
        "num_fewshot": hc.num_fewshot,
        "limit": hc.limit,
        "lm_eval_version": getattr(lm_eval, "__version__", ""),
    }
