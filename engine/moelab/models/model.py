"""The decoder: a Llama-family model whose attention and FFN blocks may be mixtures of experts.

Parameter names match Hugging Face Llama/Mixtral (model.layers.L.self_attn.q_proj, ...,
block_sparse_moe.gate) and the families' own norms (post_feedforward_layernorm, self_attn.q_norm);
expert weights are stacked in memory and split per expert on disk. Where the norms sit:

- pre (Llama): x += Attn(input_layernorm x); x += FFN(post_attention_layernorm x)
- post (OLMo2): x += post_attention_layernorm Attn(x); x += post_feedforward_layernorm FFN(x)
- sandwich (Gemma2/3): x += post_attention_layernorm Attn(input_layernorm x);
  x += post_feedforward_layernorm FFN(pre_feedforward_layernorm x)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from moelab.errors import ConfigError
from moelab.models.attention import Attention, ExpertAttention, softcap
from moelab.models.config import ModelConfig
from moelab.models.ffn import DenseFFN, Experts, SparseMoE
from moelab.models.kv_cache import KVCache
from moelab.models.norm import family_norm
from moelab.models.rope import RotaryEmbedding
from moelab.models.routing import RouterLogits


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # [B, T, V]
    router_logits: list[RouterLogits] = field(default_factory=list)
    hidden_states: torch.Tensor | None = None  # final normed hidden states [B, T, d]


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.parallel = cfg.parallel_block
        self.layout = cfg.arch.norm_layout
        hid = cfg.hidden_size
        if self.layout != "post":
            self.input_layernorm = family_norm(cfg, hid)
        moe = cfg.moe
        self.is_moe = cfg.is_moe_layer(layer)
        # Attention experts, like FFN experts, only in the MoE layers: a layer outside
        # moe_layers is a plain dense layer.
        self.self_attn: nn.Module = (
            ExpertAttention(cfg, layer)
            if self.is_moe and moe is not None and moe.attn_experts
            else Attention(cfg, layer)
        )
        if not self.parallel:
            self.post_attention_layernorm = family_norm(cfg, hid)
        if self.layout == "sandwich":
            self.pre_feedforward_layernorm = family_norm(cfg, hid)
        if self.layout != "pre":
            self.post_feedforward_layernorm = family_norm(cfg, hid)
        if self.is_moe:
            self.block_sparse_moe = _make_sparse_moe(cfg, layer)
        else:
            self.mlp = DenseFFN(cfg)

    def _ffn(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterLogits | None]:
        if self.is_moe:
            return self.block_sparse_moe(x)
        return self.mlp(x), None

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, list[RouterLogits]]:
        if self.layout != "pre":
            return self._forward_post_norms(x, cos, sin, cache)
        h = self.input_layernorm(x)
        a, ra = self.self_attn(h, cos, sin, cache)
        if self.parallel:
            f, rf = self._ffn(h)
            x = x + a + f
        else:
            x = x + a
            f, rf = self._ffn(self.post_attention_layernorm(x))
            x = x + f
        return x, [r for r in (ra, rf) if r is not None]

    def _forward_post_norms(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, list[RouterLogits]]:
        sandwich = self.layout == "sandwich"
        a, ra = self.self_attn(self.input_layernorm(x) if sandwich else x, cos, sin, cache)
        x = x + self.post_attention_layernorm(a)
        f, rf = self._ffn(self.pre_feedforward_layernorm(x) if sandwich else x)
        x = x + self.post_feedforward_layernorm(f)
        return x, [r for r in (ra, rf) if r is not None]


def _make_sparse_moe(cfg: ModelConfig, layer: int) -> nn.Module:
    assert cfg.moe is not None
    if cfg.moe.lora_rank > 0:
        from moelab.models.lora_experts import LoRASparseMoE  # UpIT's LoRA variant

        return LoRASparseMoE(cfg, layer)
    return SparseMoE(cfg, layer)


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = family_norm(cfg, cfg.hidden_size)
        self.rotary = RotaryEmbedding(cfg)
        self.embed_scale = cfg.arch.embed_scale
        # Gemma3's sliding layers rotate with their own base frequency.
        self.local_layers = [i for i in range(cfg.num_hidden_layers) if cfg.uses_local_rope(i)]
        if self.local_layers:
            self.rotary_local = RotaryEmbedding(cfg, local=True)
        # Training memory lever: each layer's activations are recomputed in the backward pass instead
        # of kept. Layers are pure functions of their inputs (router logits are returned, not stored),
        # and the recompute replays the RNG state, so the gradients are those of the plain forward.
        self.checkpoint_layers = False

    def forward(
        self, input_ids: torch.Tensor, cache: KVCache | None = None, num_layers: int | None = None
    ) -> tuple[torch.Tensor, list[RouterLogits]]:
        """Final normed hidden states [B, T, d] and every router's logits. With a cache, input_ids
        continue the cached tokens: their positions start after them, and their K/V join the cache.
        `num_layers` runs only the first layers (the inspection graph stops after its last router)."""
        x = self.embed_tokens(input_ids)
        if self.embed_scale:  # Gemma: the scale rounded to the model dtype first, as transformers does
            x = x * torch.tensor(self.embed_tokens.embedding_dim**0.5, dtype=x.dtype)
        t = input_ids.shape[1]
        offset = cache.get_seq_length() if cache is not None else 0
        rope = self.rotary(t, x.device, x.dtype, offset)
        rope_local = self.rotary_local(t, x.device, x.dtype, offset) if self.local_layers else rope
        routers: list[RouterLogits] = []
        recompute = self.checkpoint_layers and cache is None and torch.is_grad_enabled()
        layers = self.layers if num_layers is None else self.layers[:num_layers]
        for i, layer in enumerate(layers):
            cos_sin = rope_local if i in self.local_layers else rope
            if recompute:
                x, r = checkpoint(layer, x, *cos_sin, None, use_reentrant=False)
            else:
                x, r = layer(x, *cos_sin, cache)
            routers.extend(r)
        return self.norm(x), routers


def lm_logits(cfg: ModelConfig, lm_head: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """Logits from the final normed hidden states: the one place for what a family does after the
    LM head (Gemma2's soft-cap), shared with the transformers wrapper (remote_code/hf_wrapper.py)."""
    return softcap(lm_head(h), cfg.final_logit_softcapping)


class MoELabForCausalLM(nn.Module):
    """forward(input_ids[, cache]) -> CausalLMOutput(logits, router_logits)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(_init_weights)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> CausalLMOutput:
        h, routers = self.model(input_ids, cache)
        return CausalLMOutput(
            logits=lm_logits(self.config, self.lm_head, h), router_logits=routers, hidden_states=h
        )

    def set_moe_options(
        self, capacity_factor: float | None = None, router_jitter_noise: float | None = None
    ) -> None:
        """Changes the MoE's capacity factor and router jitter in place (None = keep): config and modules.
        A Mixtral that no longer computes what transformers' Mixtral does becomes model_type moelab."""
        moe = self.config.moe
        if moe is None:
            name = "capacity_factor" if capacity_factor is not None else "router_jitter_noise"
            raise ConfigError(f"{name}: the model has no MoE layers (a dense model routes nothing)")
        new = dataclasses.replace(
            moe,
            capacity_factor=moe.capacity_factor if capacity_factor is None else capacity_factor,
            router_jitter_noise=moe.router_jitter_noise
            if router_jitter_noise is None
            else router_jitter_noise,
        )
        if new.capacity_factor > 0 and new.lora_rank > 0:
            raise ConfigError(
                "capacity_factor: expert capacity is not supported with LoRA experts (lora_rank > 0)"
            )
        from moelab.models.lora_experts import LoRASparseMoE

        self.config.moe = new
        for m in self.modules():
            if isinstance(m, Experts):
                m.capacity_factor = new.capacity_factor
            if isinstance(m, SparseMoE | LoRASparseMoE | ExpertAttention):  # FFN and attention routers
                m.jitter_noise = new.router_jitter_noise
        if (
            self.config.model_type != "moelab"
            and self.config.moe is not None
            and self.config.native_moe_type() != self.config.model_type
        ):
            self.config.model_type = "moelab"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


_INITS = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")


@contextmanager
def _skip_init() -> Iterator[None]:
    """Initializers as no-ops: on the meta device they only cost time (torch routes meta
    normal_ through its reference implementations, importing torch._dynamo on first use)."""
    saved = {n: getattr(nn.init, n) for n in _INITS}
    try:
        for n in _INITS:
            setattr(nn.init, n, lambda t, *a, **k: t)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def meta_model(cfg: ModelConfig) -> MoELabForCausalLM:
    """The model's structure (names, shapes) without storage or initialisation: for loaders,
    which assign real tensors afterwards, and for weight surgery, which only needs the names."""
    with torch.device("meta"), _skip_init():
        return MoELabForCausalLM(cfg)
