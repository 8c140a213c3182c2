"""read_header on random and mutated files: a CheckpointError or a valid header, nothing else, fast."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moelab.errors import CheckpointError
from moelab.io.safetensors_file import read_header

_DIR = Path(tempfile.mkdtemp(prefix="moelab-fuzz-"))
_VALID_HEADER = {
    "__metadata__": {"format": "pt"},
    "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
}


def _file(header: bytes, data: bytes = b"\0" * 32) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


VALID = _file(json.dumps(_VALID_HEADER).encode())


def _check(raw: bytes) -> None:
    path = _DIR / "f.safetensors"
    path.write_bytes(raw)
    try:
        header = read_header(path)
    except CheckpointError:
        return
    assert isinstance(header, dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "BF16", "F16", "I8", "F17", "", "f32"]) | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-5, 2**40), max_size=3) | json_values,
    },
)
FUZZ = settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw):
    _check(raw)


@FUZZ
@given(st.dictionaries(st.text(max_size=10), entries | json_values, max_size=5), st.binary(max_size=64))
def test_random_headers(header, data):
    _check(_file(json.dumps(header).encode(), data))


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, len(VALID)),
)
def test_mutated_valid_file(flips, cut):
    raw = bytearray(VALID)
    for pos, byte in flips:
        raw[pos] = byte
    _check(bytes(raw[: max(cut, 1)]))


@FUZZ
@given(st.text(max_size=100), st.integers(0, 2**64 - 1))
def test_header_text_and_length(text, claimed):
    body = text.encode()
    _check(struct.pack("<Q", claimed) + body)
    _check(_file(body))


def test_deep_nesting_and_huge_numbers():
    _check(_file(b"[" * 100_000))
    _check(_file(b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'))
