"""Three synthetic text domains made by the engine itself: code-like programs, arithmetic with
answers, and prose-like sentences.

They are deliberately different at the byte level (keywords and indentation, digits and
operators, lowercase words and punctuation) so that domain experts have something to specialise
in, and each has learnable structure (arithmetic answers are correct, code reuses the names it
defines, prose follows a small grammar). Every document is a pure function of (domain, seed,
index): the same seed gives the same bytes on every machine and Python version.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# ---- code -------------------------------------------------------------------------------------

_NAMES = [
    "count",
    "total",
    "index",
    "value",
    "items",
    "result",
    "node",
    "left",
    "right",
    "size",
    "key",
    "acc",
    "buf",
    "row",
    "col",
    "step",
    "limit",
    "data",
    "head",
    "tail",
]
_FUNCS = ["compute", "merge", "split", "reduce", "scan", "update", "find", "walk", "fold", "build"]
_OPS = ["+", "-", "*", "//", "%"]
_CMPS = ["<", ">", "<=", ">=", "==", "!="]


def _expr(rng: random.Random, names: list[str]) -> str:
    a = rng.choice(names)
    if rng.random() < 0.5:
        return f"{a} {rng.choice(_OPS)} {rng.randint(1, 9)}"
    return f"{a} {rng.choice(_OPS)} {rng.choice(names)}"


def _block(rng: random.Random, names: list[str], depth: int, indent: str) -> list[str]:
    lines: list[str] = []
    for _ in range(rng.randint(2, 4)):
        r = rng.random()
        if r < 0.25 and depth < 2:
            lines.append(f"{indent}for {rng.choice(names)} in range({rng.choice(names)}):")
            lines += _block(rng, names, depth + 1, indent + "    ")
        elif r < 0.45 and depth < 2:
            lines.append(f"{indent}if {rng.choice(names)} {rng.choice(_CMPS)} {rng.randint(0, 9)}:")
            lines += _block(rng, names, depth + 1, indent + "    ")
        else:
            new = rng.choice(_NAMES)
            lines.append(f"{indent}{new} = {_expr(rng, names)}")
            if new not in names:
                names.append(new)
    return lines


def code_document(rng: random.Random) -> str:
    name = f"{rng.choice(_FUNCS)}_{rng.choice(_NAMES)}"
    args = rng.sample(_NAMES, rng.randint(1, 3))
    names = list(args)
    lines = [f"def {name}({', '.join(args)}):"]
    lines += _block(rng, names, 0, "    ")
    lines.append(f"    return {rng.choice(names)}")
    return "\n".join(lines) + "\n"


# ---- arithmetic -------------------------------------------------------------------------------


def math_document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(4, 8)):
        kind = rng.random()
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if kind < 0.35:
            lines.append(f"{a}+{b}={a + b}")
        elif kind < 0.6:
            hi, lo = max(a, b), min(a, b)
            lines.append(f"{hi}-{lo}={hi - lo}")
        elif kind < 0.85:
            a, b = rng.randint(0, 12), rng.randint(0, 12)
            lines.append(f"{a}*{b}={a * b}")
        else:
            c = rng.randint(1, 9)
            lines.append(f"({a}+{b})*{c}={(a + b) * c}")
    return "\n".join(lines) + "\n"


# ---- prose ------------------------------------------------------------------------------------

_DET = ["the", "a", "every", "one", "that"]
_ADJ = ["quiet", "old", "bright", "small", "distant", "patient", "green", "cold", "gentle", "heavy"]
_NOUN = [
    "river",
    "stone",
    "village",
    "teacher",
    "garden",
    "window",
    "traveller",
    "lantern",
    "forest",
    "letter",
    "market",
    "bridge",
    "child",
    "song",
    "mountain",
]
_VERB = [
    "carries",
    "watches",
    "follows",
    "remembers",
    "finds",
    "leaves",
    "crosses",
    "answers",
    "keeps",
    "opens",
]
_PREP = ["toward", "beside", "under", "across", "behind", "near"]
_CONJ = ["and", "but", "while", "because"]


def _phrase(rng: random.Random) -> str:
    adj = f"{rng.choice(_ADJ)} " if rng.random() < 0.6 else ""
    return f"{rng.choice(_DET)} {adj}{rng.choice(_NOUN)}"


def _clause(rng: random.Random) -> str:
    s = f"{_phrase(rng)} {rng.choice(_VERB)} {_phrase(rng)}"
    if rng.random() < 0.5:
        s += f" {rng.choice(_PREP)} {_phrase(rng)}"
    return s


def prose_document(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 5)):
        s = _clause(rng)
        if rng.random() < 0.3:
            s += f", {rng.choice(_CONJ)} {_clause(rng)}"
        sentences.append(s[0].upper() + s[1:] + ".")
    return " ".join(sentences) + "\n"


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "code": code_document,
    "math": math_document,
    "prose": prose_document,
}
DOMAINS = tuple(GENERATORS)


def documents(domain: str, seed: int, n_chars: int, split: str = "train") -> list[str]:
    """Documents of `domain` totalling at least `n_chars` characters, a pure function of the
    arguments. Train and eval splits use disjoint random streams."""
    if domain not in GENERATORS:
        raise KeyError(domain)
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and versions.
    rng = random.Random(f"moelab:{domain}:{split}:{seed}")
    gen = GENERATORS[domain]
    out: list[str] = []
    total = 0
    while total < n_chars:
        doc = gen(rng)
        out.append(doc)
        total += len(doc)
    return out
