"""Keys and values of the tokens seen so far, per layer, for incremental decoding.

The attention modules call `update(k, v, layer)` and attend over what it returns, the interface of
transformers' `Cache` classes, so a Hugging Face `DynamicCache` can stand in for this one.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, k: torch.Tensor, v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends k, v [B, H, T, D] (keys already rotated) to the layer's; returns the whole of both."""
        if layer in self.layers:
            pk, pv = self.layers[layer]
            k, v = torch.cat((pk, k), dim=2), torch.cat((pv, v), dim=2)
        self.layers[layer] = (k, v)
        return k, v

    def get_seq_length(self, layer: int = 0) -> int:
        return self.layers[layer][0].shape[2] if layer in self.layers else 0
