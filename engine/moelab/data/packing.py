"""Documents -> one token stream per domain and split; fixed-length windows for training and eval.

Documents are joined with the tokenizer's end-of-document id so a window may span documents
(GPT-style packing, no padding). Windows are `seq_len + 1` tokens: inputs are the first
`seq_len`, targets the last `seq_len`.
"""

from __future__ import annotations

import torch

from moelab.data.tokenizer import ByteTokenizer, Tokenizer


def pack(docs: list[str], tok: Tokenizer) -> torch.Tensor:
    """1-D int64 tensor: doc₀ EOS doc₁ EOS ..."""
    if isinstance(tok, ByteTokenizer):
        # Fast path: the byte tokenizer is the identity on UTF-8 bytes.
        data = "\0".join(docs).encode("utf-8") + b"\0"
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    ids: list[int] = []
    for d in docs:
        ids.extend(tok.encode(d))
        if tok.eos_id is not None:
            ids.append(tok.eos_id)
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(stream: torch.Tensor, seq_len: int, max_windows: int) -> torch.Tensor:
    """Non-overlapping [n, seq_len + 1] windows from the start of a stream (a fixed eval set)."""
    n = min(max_windows, (len(stream) - 1) // seq_len)
    if n <= 0:
        return stream.new_zeros(0, seq_len + 1)
    return torch.stack([stream[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)])
