"""Model configuration as dataclasses, read from and written to Hugging Face `config.json`.

One `ModelConfig` describes every model the engine runs: a dense Llama-family decoder
(llama, mistral, qwen2), a Mixtral checkpoint, or the engine's own `moelab` type, which adds
what Mixtral cannot express (attention experts, MoE on some layers only, parallel blocks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from moelab.errors import ConfigError
from moelab.models.routing import ROUTER_WEIGHTS

DENSE_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_TYPES = (*DENSE_TYPES, "mixtral", "moelab")


@dataclass
class MoEConfig:
    """Which parts of the model are mixtures of experts, and how they are routed."""

    num_experts: int = 4
    top_k: int = 2
    # Layers whose FFN is a mixture; the others keep a dense FFN.
    moe_layers: list[int] = field(default_factory=list)
    # BAM: attention experts (soft mixture over all experts, or top-k with attn_top_k > 0).
    attn_experts: bool = False
    attn_top_k: int = 0  # 0 = soft mixture over all attention experts
    shared_kv: bool = False  # BAM shared-KV: per-expert Q and O, one K and V
    # UpIT's LoRA variant: experts are low-rank deltas on a shared dense FFN (rank 0 = full experts).
    lora_rank: int = 0
    lora_alpha: float = 0.0
    # FFN expert capacity: each expert takes at most ceil(capacity_factor · tokens · top_k / num_experts)
    # routed slots, later tokens dropping first (GShard / Switch). 0 = dropless (every slot computed).
    capacity_factor: float = 0.0
    # How kept top-k router probabilities become weights: st | renorm | raw (models/routing.py).
    router_weights: str = "st"
    # Router jitter (Switch; Mixtral's router_jitter_noise): in training only, every router's input
    # (FFN and attention routers) is multiplied by uniform(1-ε, 1+ε) noise. 0 = off.
    router_jitter_noise: float = 0.0
    method: str = ""  # sparse | btx | bam-ekv | bam-skv | upit

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"moe config: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def __post_init__(self) -> None:
        if self.router_weights not in ROUTER_WEIGHTS:
            raise ConfigError(f"moe config: router_weights {self.router_weights!r} is not one of {', '.join(ROUTER_WEIGHTS)}")
        if not self.capacity_factor >= 0:
            raise ConfigError(f"moe config: capacity_factor {self.capacity_factor}: must be 0 (dropless) or positive")
        if not 0 <= self.router_jitter_noise < 1:
            raise ConfigError(f"moe config: router_jitter_noise {self.router_jitter_noise}: must be in [0, 1)")


@dataclass
class ModelConfig:
    vocab_size: int = 256
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 0  # 0 = hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # rope_type default|linear|llama3|yarn and its fields
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v bias (qwen2 has it, o_proj never does)
    parallel_block: bool = False  # y = x + Attn(LN x) + FFN(LN x)
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    moe: MoEConfig | None = None

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and layer in self.moe.moe_layers

    # ---- Hugging Face config.json ---------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_TYPES:
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported (expected one of {', '.join(SUPPORTED_TYPES)})"
            )
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported (Llama-family models use silu)")
        # Llama's attention_bias also puts a bias on o_proj, and mlp_bias on the FFN: weights this
        # decoder has no place for, so refuse rather than silently drop them.
        if model_type == "llama" and d.get("attention_bias"):
            raise ConfigError(f"{source}: attention_bias true (biases on q/k/v/o_proj) is not supported for llama")
        if d.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias true is not supported (Llama-family FFNs have no bias)")
        try:
            rope_theta, rope_scaling = _read_rope(d)
            n_heads = int(d["num_attention_heads"])
            hidden = int(d["hidden_size"])
            cfg = cls(
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]),
                num_attention_heads=n_heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or n_heads),
                head_dim=int(d.get("head_dim") or hidden // n_heads),
                max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                # Qwen2 always has q/k/v biases (its modeling code ignores the field); Mistral never.
                attention_bias=model_type == "qwen2" or (model_type != "mistral" and bool(d.get("attention_bias", False))),
                parallel_block=bool(d.get("parallel_block", False)),
                model_type=model_type,
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=d.get("eos_token_id"),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}") from None
        if model_type == "mixtral":
            n = int(d.get("num_local_experts", 8))
            cfg.moe = MoEConfig(
                num_experts=n,
                top_k=int(d.get("num_experts_per_tok", 2)),
                moe_layers=list(range(cfg.num_hidden_layers)),
                router_jitter_noise=float(d.get("router_jitter_noise") or 0.0),
            )
            meta = d.get("moelab") or {}
            cfg.moe.method = str(meta.get("method", ""))
        elif model_type == "moelab":
            if "moe" in d and d["moe"] is not None:
                cfg.moe = MoEConfig.from_dict(d["moe"])
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json for this model; Mixtral when Mixtral can express it, else model_type moelab."""
        d: dict[str, Any] = {
            "model_type": self.model_type,
            "architectures": [_ARCHITECTURES.get(self.model_type, "MoELabForCausalLM")],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "torch_dtype": "float32",
        }
        params: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            d["rope_scaling"] = dict(self.rope_scaling)
            params.update(self.rope_scaling)
        d["rope_parameters"] = params
        if self.bos_token_id is not None:
            d["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            d["eos_token_id"] = self.eos_token_id
        if self.model_type == "mixtral":
            assert self.moe is not None
            d["num_local_experts"] = self.moe.num_experts
            d["num_experts_per_tok"] = self.moe.top_k
            d["router_jitter_noise"] = self.moe.router_jitter_noise
            # transformers' default; `write_config` maps the engine's α to it when the α is known.
            d["router_aux_loss_coef"] = 0.01
            d["output_router_logits"] = False
        if self.model_type == "moelab":
            d["parallel_block"] = self.parallel_block
            d["moe"] = self.moe.to_dict() if self.moe else None
        return d

    def mixtral_compatible(self) -> bool:
        """Whether a Hugging Face Mixtral model computes exactly what this MoE computes."""
        m = self.moe
        return (
            m is not None
            and m.moe_layers == list(range(self.num_hidden_layers))
            and not m.attn_experts
            and m.lora_rank == 0
            and m.capacity_factor == 0  # transformers' Mixtral is dropless
            and not self.attention_bias
            and not self.parallel_block
            # Mixtral renormalises the kept weights: Switch-style raw weights are another function.
            and m.router_weights != "raw"
        )


_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
}


def _read_rope(d: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """RoPE theta and scaling from either transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`)."""
    params = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or None
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    merged = dict(scaling or {})
    for k, v in params.items():
        if k != "rope_theta":
            merged.setdefault(k, v)
    if "type" in merged and "rope_type" not in merged:
        merged["rope_type"] = merged.pop("type")
    if not merged or merged.get("rope_type", "default") == "default":
        return theta, None
    return theta, merged
