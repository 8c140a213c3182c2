"""Per-domain token streams and the training mixture.

Every batch is a pure function of (data seed, step, micro-step): which domain each row comes
from and where its window starts are drawn from a generator seeded by those numbers. Resuming at
step s therefore reproduces exactly the batches an uninterrupted run would have seen, with no
data-loader state to save beyond the step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from moelab.data import sources
from moelab.data.packing import pack
from moelab.data.sources import DataSource
from moelab.data.tokenizer import ByteTokenizer, Tokenizer
from moelab.errors import ConfigError


@dataclass
class DataConfig:
    """The domains a run trains and evaluates on."""

    sources: list[DataSource] = field(
        default_factory=lambda: [DataSource("code"), DataSource("math"), DataSource("prose")]
    )
    seq_len: int = 128
    seed: int = 0  # synthetic text and batch order
    synthetic_train_chars: int = 1_000_000  # per domain
    synthetic_eval_chars: int = 65_536  # per domain
    eval_fraction: float = 0.05  # user data: the held-out tail of each source


@dataclass
class DomainTokens:
    train: torch.Tensor
    eval: torch.Tensor


def build_domains(cfg: DataConfig, tok: Tokenizer, need_train: bool = True) -> dict[str, DomainTokens]:
    """Token streams per domain. `need_train=False` (evaluation only) allows an empty train split,
    e.g. eval_fraction 1.0 to evaluate a whole user file."""
    if not cfg.sources:
        raise ConfigError("data.sources: at least one source is needed")
    out: dict[str, DomainTokens] = {}
    for i, src in enumerate(cfg.sources):
        if src.domain in out:
            raise ConfigError(
                f"data.sources[{i}].domain: {src.domain!r} appears twice (one source per domain)"
            )
        if src.kind == "synthetic":
            train, ev = _synthetic_tokens(
                src.domain, cfg.seed, cfg.synthetic_train_chars, cfg.synthetic_eval_chars, tok
            )
        else:
            stream = pack(sources.load_user_documents(src), tok)
            cut = int(len(stream) * (1.0 - cfg.eval_fraction))
            train, ev = stream[:cut], stream[cut:]
        for name, s in (("train", train), ("eval", ev)):
            if name == "train" and not need_train:
                continue
            if len(s) < cfg.seq_len + 2:
                raise ConfigError(
                    f"data.sources[{i}] ({src.domain}): the {name} split has {len(s)} tokens, fewer than "
                    f"one sequence of seq_len {cfg.seq_len} + 1"
                )
        out[src.domain] = DomainTokens(train, ev)
    return out


def _synthetic_tokens(
    domain: str, seed: int, train_chars: int, eval_chars: int, tok: Tokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(tok, ByteTokenizer):
        return _synthetic_bytes(domain, seed, train_chars, eval_chars)
    src = DataSource(domain)
    return (
        pack(sources.load_documents(src, "train", seed, train_chars), tok),
        pack(sources.load_documents(src, "eval", seed, eval_chars), tok),
    )


@functools.lru_cache(maxsize=16)
def _synthetic_bytes(
    domain: str, seed: int, train_chars: int, eval_chars: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per process: the demo builds the same domains for a dozen stages.
    src = DataSource(domain)
    tok = ByteTokenizer()
    return (
        pack(sources.load_documents(src, "train", seed, train_chars), tok),
        pack(sources.load_documents(src, "eval", seed, eval_chars), tok),
    )


class MixtureSampler:
    """Random windows from each domain's train stream, domains in proportion to `weights`."""

    def __init__(
        self,
        streams: dict[str, torch.Tensor],
        weights: dict[str, float],
        seq_len: int,
        batch_size: int,
        seed: int,
    ) -> None:
        self.domains = [d for d in streams if weights.get(d, 0.0) > 0]
        if not self.domains:
            raise ConfigError("data: every domain has mixture weight 0")
        self.streams = streams
        w = np.array([weights[d] for d in self.domains], dtype=np.float64)
        self.weights = w / w.sum()
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed

    def _rows_per_domain(self, rng: np.random.Generator) -> list[int]:
        # Largest-remainder rounding keeps each batch as close to the mixture as its size allows;
        # the leftover rows are drawn at random so small weights still get their share over time.
        exact = self.weights * self.batch_size
        counts = np.floor(exact).astype(int)
        rest = self.batch_size - int(counts.sum())
        if rest:  # rest < number of domains, and only domains with a remainder can get a row
            frac = exact - counts
            extra = rng.choice(len(self.domains), size=rest, replace=False, p=frac / frac.sum())
            counts[extra] += 1
        return counts.tolist()

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, list[str]]:
        """[batch_size, seq_len + 1] token windows and the domain of each row."""
        rng = np.random.default_rng([self.seed, step, micro])
        counts = self._rows_per_domain(rng)
        rows: list[torch.Tensor] = []
        names: list[str] = []
        for d, c in zip(self.domains, counts):
            s = self.streams[d]
            starts = rng.integers(0, len(s) - self.seq_len - 1, size=c)
            rows.extend(s[int(i) : int(i) + self.seq_len + 1] for i in starts)
            names.extend([d] * c)
        order = rng.permutation(len(rows))
        return torch.stack([rows[i] for i in order]), [names[i] for i in order]
