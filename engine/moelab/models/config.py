"""Model configuration as dataclasses, read from and written to Hugging Face `config.json`.

One `ModelConfig` describes every model the engine runs: a dense decoder of one of the
`FAMILIES` (llama, mistral, qwen2, qwen3, phi3, olmo2, gemma, gemma2, gemma3_text), a Mixtral
checkpoint, or the engine's own `moelab` type, which adds what Mixtral cannot express (attention
experts, MoE on some layers only, parallel blocks, every family but Llama/Mistral). An MoE
keeps its dense family in `family` (config.json: `base_model_type`), and its config.json carries
that family's own fields (windows, soft-caps, ...), so one reader parses both.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from moelab.errors import ConfigError
from moelab.models.routing import ROUTER_WEIGHTS, RouterWeights

# q/k norm: none | RMSNorm over each head (Qwen3/Gemma3) | over all heads (OLMo2).
QKNorm = Literal["", "head", "full"]
# pre: Llama | post: OLMo2 (norm the sublayer output, no input norm) | sandwich: Gemma2/3.
NormLayout = Literal["pre", "post", "sandwich"]


@dataclass(frozen=True)
class Family:
    """What a dense family computes beyond the Llama decoder (transformers' modeling_<family>.py)."""

    hidden_act: str = "silu"
    qk_norm: QKNorm = ""
    norm_layout: NormLayout = "pre"
    norm_offset: float = 0.0  # Gemma stores w and scales by (1 + w)
    norm_weight_fp32: bool = False  # OLMo2, Gemma: the weight multiplies before the cast back, not after
    embed_scale: bool = False  # Gemma: embeddings times sqrt(hidden_size), in the model dtype
    qkv_bias: bool = False  # Qwen2: q/k/v biases always (its modeling code ignores attention_bias)
    fused_on_disk: bool = False  # Phi-3: qkv_proj and gate_up_proj, split on load (io/fused.py)


FAMILIES: dict[str, Family] = {
    "llama": Family(),
    "mistral": Family(),
    "qwen2": Family(qkv_bias=True),
    "qwen3": Family(qk_norm="head"),
    # Phi-3 with its fused tensors split is exactly Mistral; written back as Mistral (to_hf_dict).
    "phi3": Family(fused_on_disk=True),
    "olmo2": Family(qk_norm="full", norm_layout="post", norm_weight_fp32=True),
    "gemma": Family(hidden_act="gelu_pytorch_tanh", norm_offset=1.0, norm_weight_fp32=True, embed_scale=True),
    "gemma2": Family(
        hidden_act="gelu_pytorch_tanh",
        norm_layout="sandwich",
        norm_offset=1.0,
        norm_weight_fp32=True,
        embed_scale=True,
    ),
    "gemma3_text": Family(
        hidden_act="gelu_pytorch_tanh",
        qk_norm="head",
        norm_layout="sandwich",
        norm_offset=1.0,
        norm_weight_fp32=True,
        embed_scale=True,
    ),
}
DENSE_TYPES = tuple(FAMILIES)
# Native transformers MoE types the engine reads and writes, and the family each one is built on.
NATIVE_MOE_FAMILY = {"mixtral": "llama", "qwen3_moe": "qwen3"}
SUPPORTED_TYPES = (*DENSE_TYPES, *NATIVE_MOE_FAMILY, "moelab")
ROPE_TYPES = ("default", "linear", "llama3")
LayerType = Literal["full_attention", "sliding_attention"]
LAYER_TYPES: tuple[LayerType, ...] = typing.get_args(LayerType)
# Families whose attention_bias also biases o_proj (and Gemma/OLMo2/Qwen3 the same): no place for it here.
_O_BIAS_FAMILIES = ("llama", "qwen3", "olmo2", "gemma", "gemma2", "gemma3_text")
_GEMMA_SLIDING_PATTERN = {"gemma2": 2, "gemma3_text": 6}  # every n-th layer is global
# A `moelab` checkpoint carries its modeling file (remote_code/bundle.py writes it); config.json's
# auto_map sends transformers' Auto classes (trust_remote_code=True) to its classes.
REMOTE_CODE_FILE = "modeling_moelab.py"
REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "modeling_moelab.MoELabConfig",
    "AutoModelForCausalLM": "modeling_moelab.MoELabHFForCausalLM",
}


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
    router_weights: RouterWeights = "st"
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
            raise ConfigError(
                f"moe config: router_weights {self.router_weights!r} is not one of {', '.join(ROUTER_WEIGHTS)}"
            )
        if not self.capacity_factor >= 0:
            raise ConfigError(
                f"moe config: capacity_factor {self.capacity_factor}: must be 0 (dropless) or positive"
            )
        if not 0 <= self.router_jitter_noise < 1:
            raise ConfigError(
                f"moe config: router_jitter_noise {self.router_jitter_noise}: must be in [0, 1)"
            )


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
    rope_scaling: dict[str, Any] | None = None  # rope_type default|linear|llama3 and its fields
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v bias (qwen2 has it, o_proj never does)
    parallel_block: bool = False  # y = x + Attn(LN x) + FFN(LN x)
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    moe: MoEConfig | None = None
    family: str = ""  # the dense architecture (FAMILIES); "" = model_type's, llama for moelab/mixtral
    # Sliding-window attention: a query sees itself and the window-1 keys before it. layer_types
    # (full_attention | sliding_attention per layer) picks the windowed layers; None = all of them.
    sliding_window: int | None = None
    layer_types: list[LayerType] | None = None
    attn_logit_softcapping: float | None = None  # scores -> cap·tanh(scores/cap) (Gemma2)
    final_logit_softcapping: float | None = None  # logits likewise (Gemma2/3)
    query_pre_attn_scalar: int | float | None = (
        None  # scores scaled by this**-0.5, not head_dim**-0.5 (Gemma)
    )
    rope_local_theta: float | None = None  # RoPE base of the sliding layers (Gemma3's rope_local_base_freq)
    # Kept so that every output made from a seed carries them.
    hf_extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "config.json keys of a Hugging Face seed that the engine does not model (initializer_range, ...)"
        },
    )

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if not self.family:
            self.family = self.model_type if self.model_type in FAMILIES else "llama"
        if self.model_type in FAMILIES and self.family != self.model_type:
            raise ConfigError(
                f"family {self.family!r}: a dense model's family is its model_type ({self.model_type!r})"
            )
        if self.family not in FAMILIES:
            raise ConfigError(
                f"base_model_type {self.family!r} is not supported (expected one of {', '.join(FAMILIES)})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.layer_types is not None:
            bad = [t for t in self.layer_types if t not in LAYER_TYPES]
            if bad:
                raise ConfigError(
                    f"layer_types: {bad[0]!r} is not supported (expected {' or '.join(LAYER_TYPES)})"
                )
            if len(self.layer_types) != self.num_hidden_layers:
                raise ConfigError(
                    f"layer_types: {len(self.layer_types)} entries for {self.num_hidden_layers} layers"
                )
        if self.parallel_block and self.arch.norm_layout != "pre":
            raise ConfigError(
                f"parallel_block: not supported for {self.family} (its norms sit around each sublayer)"
            )

    @property
    def arch(self) -> Family:
        return FAMILIES[self.family]

    @property
    def computes_as(self) -> str:
        """The first family that computes what this one does: Mistral's and Phi-3's decoders (Phi-3
        split) are Llama's (their windows are `sliding_window`), so their checkpoints mix."""
        spec = dataclasses.replace(self.arch, fused_on_disk=False)
        return next(n for n, f in FAMILIES.items() if dataclasses.replace(f, fused_on_disk=False) == spec)

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and layer in self.moe.moe_layers

    def window(self, layer: int) -> int | None:
        """The sliding window of `layer`, None for full causal attention."""
        if self.sliding_window is None or (
            self.layer_types is not None and self.layer_types[layer] != "sliding_attention"
        ):
            return None
        return self.sliding_window

    def uses_local_rope(self, layer: int) -> bool:
        """Gemma3: a sliding layer rotates with rope_local_theta."""
        return (
            self.rope_local_theta is not None
            and self.layer_types is not None
            and self.layer_types[layer] == "sliding_attention"
        )

    def attn_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    # ---- Hugging Face config.json ---------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_TYPES:
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported (expected one of {', '.join(SUPPORTED_TYPES)})"
            )
        family = (
            model_type
            if model_type in FAMILIES
            else d.get("base_model_type") or NATIVE_MOE_FAMILY.get(model_type) or "llama"
        )
        if family not in FAMILIES:
            raise ConfigError(
                f"{source}: base_model_type {family!r} is not supported (expected one of {', '.join(FAMILIES)})"
            )
        arch = FAMILIES[family]
        act = d.get("hidden_activation") or d.get("hidden_act") or arch.hidden_act
        if act == "gelu" and family == "gemma":
            act = "gelu_pytorch_tanh"  # transformers' Gemma reads its releases' legacy "gelu" as the tanh approximation
        if act != arch.hidden_act:
            raise ConfigError(
                f"{source}: hidden_act {act!r} is not supported for {family} (it uses {arch.hidden_act})"
            )
        dense = model_type in FAMILIES
        # Llama-style attention_bias also puts a bias on o_proj, and mlp_bias on the FFN: weights
        # this decoder has no place for, so refuse rather than silently drop them.
        if dense and family in _O_BIAS_FAMILIES and d.get("attention_bias"):
            raise ConfigError(
                f"{source}: attention_bias true (biases on q/k/v/o_proj) is not supported for {family}"
            )
        if d.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias true is not supported (the FFNs here have no bias)")
        if d.get("use_bidirectional_attention"):
            raise ConfigError(
                f"{source}: use_bidirectional_attention true is not supported (causal decoders only)"
            )
        try:
            rope_theta, rope_scaling, local_theta = _read_rope(d, family, source)
            n_heads = int(d["num_attention_heads"])
            hidden = int(d["hidden_size"])
            n_layers = int(d["num_hidden_layers"])
            window, layer_types = _read_window(d, family, model_type, n_layers)
            cfg = cls(
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=_intermediate_size(d, model_type, source),
                num_hidden_layers=n_layers,
                num_attention_heads=n_heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or n_heads),
                head_dim=int(d.get("head_dim") or hidden // n_heads),
                max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                # moelab/mixtral configs record the q/k/v bias as this engine means it.
                attention_bias=arch.qkv_bias or (not dense and bool(d.get("attention_bias", False))),
                parallel_block=bool(d.get("parallel_block", False)),
                model_type=model_type,
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=d.get("eos_token_id"),
                family=family,
                sliding_window=window,
                layer_types=layer_types,
                # Gemma3's attention ignores attn_logit_softcapping (transformers passes no softcap).
                attn_logit_softcapping=_opt_float(d.get("attn_logit_softcapping"))
                if family == "gemma2" or not dense
                else None,
                final_logit_softcapping=_opt_float(d.get("final_logit_softcapping"))
                if family in ("gemma2", "gemma3_text") or not dense
                else None,
                query_pre_attn_scalar=_opt_number(d.get("query_pre_attn_scalar", 256))
                if family in ("gemma2", "gemma3_text")
                else None,
                rope_local_theta=local_theta,
                pad_token_id=d.get("pad_token_id"),
                hf_extra={k: v for k, v in d.items() if k not in _MANAGED_KEYS},
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
        elif model_type == "qwen3_moe":
            cfg.moe = _qwen3_moe(d, n_layers)
            cfg.moe.method = str((d.get("moelab") or {}).get("method", ""))
        elif model_type == "moelab":
            if "moe" in d and d["moe"] is not None:
                cfg.moe = MoEConfig.from_dict(d["moe"])
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json for this model: the family's own fields under its model_type (Phi-3, its
        tensors written split, as Mistral), or mixtral / moelab with `base_model_type` the family."""
        model_type = "mistral" if self.model_type == "phi3" else self.model_type
        d: dict[str, Any] = dict(self.hf_extra)
        d.update(
            {
                "model_type": model_type,
                "architectures": [_ARCHITECTURES.get(model_type, "MoELabForCausalLM")],
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "hidden_act": self.arch.hidden_act,
                "max_position_embeddings": self.max_position_embeddings,
                "rms_norm_eps": self.rms_norm_eps,
                "rope_theta": self.rope_theta,
                "tie_word_embeddings": self.tie_word_embeddings,
                "attention_bias": self.attention_bias,
                "torch_dtype": "float32",
            }
        )
        if model_type not in FAMILIES and model_type != "qwen3_moe":  # Qwen3-MoE implies its family
            d["base_model_type"] = self.family
        params: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            d["rope_scaling"] = dict(self.rope_scaling)
            params.update(self.rope_scaling)
        d["rope_parameters"] = params
        d.update(self._family_fields(params))
        if self.bos_token_id is not None:
            d["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            d["eos_token_id"] = self.eos_token_id
        if self.pad_token_id is not None:
            d["pad_token_id"] = self.pad_token_id
        if self.model_type == "mixtral":
            assert self.moe is not None
            d["num_local_experts"] = self.moe.num_experts
            d["num_experts_per_tok"] = self.moe.top_k
            d["router_jitter_noise"] = self.moe.router_jitter_noise
            # transformers' default; `write_config` maps the engine's α to it when the α is known.
            d["router_aux_loss_coef"] = 0.01
            d["output_router_logits"] = False
        if self.model_type == "qwen3_moe":
            assert self.moe is not None
            d.update(
                {
                    "num_experts": self.moe.num_experts,
                    "num_experts_per_tok": self.moe.top_k,
                    "moe_intermediate_size": self.intermediate_size,
                    "decoder_sparse_step": 1,
                    "mlp_only_layers": [
                        i for i in range(self.num_hidden_layers) if i not in self.moe.moe_layers
                    ],
                    # Qwen3-MoE renormalises the kept weights when true, keeps the raw probabilities when false.
                    "norm_topk_prob": self.moe.router_weights != "raw",
                    "router_aux_loss_coef": 0.001,
                    "output_router_logits": False,
                }
            )
        if self.model_type == "moelab":
            d["parallel_block"] = self.parallel_block
            d["moe"] = self.moe.to_dict() if self.moe else None
            d["auto_map"] = dict(REMOTE_CODE_AUTO_MAP)
        return d

    def _family_fields(self, rope: dict[str, Any]) -> dict[str, Any]:
        """Windows, soft-caps and scalings under the names the family's transformers config reads."""
        f: dict[str, Any] = {"sliding_window": self.sliding_window}
        if self.layer_types is not None:
            f["layer_types"] = list(self.layer_types)
        if self.family in ("qwen2", "qwen3"):
            f["use_sliding_window"] = self.sliding_window is not None
            f["max_window_layers"] = self.num_hidden_layers
            f["layer_types"] = [
                ("sliding_attention" if self.window(i) else "full_attention")
                for i in range(self.num_hidden_layers)
            ]
        if self.family.startswith("gemma"):
            f["hidden_activation"] = self.arch.hidden_act
            f["query_pre_attn_scalar"] = self.query_pre_attn_scalar
            f["attn_logit_softcapping"] = self.attn_logit_softcapping
            f["final_logit_softcapping"] = self.final_logit_softcapping
        if self.family == "gemma3_text":
            f["rope_local_base_freq"] = self.rope_local_theta
            f["rope_parameters"] = {
                "full_attention": rope,
                "sliding_attention": {"rope_type": "default", "rope_theta": self.rope_local_theta},
            }
        return f

    def native_moe_type(self) -> str | None:
        """The transformers MoE type that computes exactly this MoE (mixtral, qwen3_moe), or None."""
        if self.mixtral_compatible():
            return "mixtral"
        if self.qwen3_moe_compatible():
            return "qwen3_moe"
        return None

    def _plain_ffn_moe(self) -> bool:
        """What every native transformers MoE type holds: full FFN experts only, dropless (their
        MoE blocks drop nothing), no q/k/v biases, sequential blocks."""
        m = self.moe
        return (
            m is not None
            and not m.attn_experts
            and m.lora_rank == 0
            and m.capacity_factor == 0
            and not self.attention_bias
            and not self.parallel_block
        )

    def qwen3_moe_compatible(self) -> bool:
        """Whether transformers' Qwen3-MoE computes exactly this MoE: a Qwen3 seed with FFN experts
        (some layers may stay dense: mlp_only_layers), renormalised or raw top-k weights."""
        m = self.moe
        return (
            self._plain_ffn_moe()
            and m is not None
            and self.family == "qwen3"
            and bool(m.moe_layers)
            and self.sliding_window is None  # Qwen3-MoE has no per-layer window types
            and m.router_jitter_noise == 0  # transformers' Qwen3-MoE has no jitter
        )

    def mixtral_compatible(self) -> bool:
        """Whether a Hugging Face Mixtral model computes exactly what this MoE computes."""
        m = self.moe
        return (
            self._plain_ffn_moe()
            and m is not None
            and self.family in ("llama", "mistral", "phi3")
            and self.layer_types is None  # Mixtral windows every layer or none
            and m.moe_layers == list(range(self.num_hidden_layers))
            # Mixtral renormalises the kept weights: Switch-style raw weights are another function.
            and m.router_weights != "raw"
        )


# Keys that from_hf_dict reads into fields or that belong to one model type or one writer (the
# architecture class, expert counts, our provenance, the transformers version): never carried as extras.
_MANAGED_KEYS = frozenset(
    {
        "model_type",
        "architectures",
        "auto_map",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "rope_scaling",
        "rope_parameters",
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
        "parallel_block",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "_name_or_path",
        "moe",
        "moelab",
        "num_local_experts",
        "num_experts_per_tok",
        "router_aux_loss_coef",
        "output_router_logits",
        "router_jitter_noise",
        "base_model_type",
        "sliding_window",
        "layer_types",
        "use_sliding_window",
        "max_window_layers",
        "sliding_window_pattern",
        "hidden_activation",
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "rope_local_base_freq",
        "use_bidirectional_attention",
        "num_experts",
        "moe_intermediate_size",
        "mlp_only_layers",
        "norm_topk_prob",
        "decoder_sparse_step",
    }
)

_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}


def _intermediate_size(d: dict[str, Any], model_type: str, source: str) -> int:
    """The FFN width; a Qwen3-MoE's experts must be as wide as its dense layers' FFN (the engine's
    experts are copies of a dense FFN) unless every layer is MoE."""
    inner = int(d["intermediate_size"])
    if model_type != "qwen3_moe" or "moe_intermediate_size" not in d:
        return inner
    moe_inner = int(d["moe_intermediate_size"])
    if moe_inner != inner and d.get("mlp_only_layers"):
        raise ConfigError(
            f"{source}: moe_intermediate_size {moe_inner} differs from intermediate_size {inner} "
            "with dense mlp_only_layers (experts here are as wide as the dense FFN)"
        )
    return moe_inner


def _qwen3_moe(d: dict[str, Any], n_layers: int) -> MoEConfig:
    step = int(d.get("decoder_sparse_step", 1))
    dense = set(d.get("mlp_only_layers") or [])
    return MoEConfig(
        num_experts=int(d.get("num_experts", 8)),
        top_k=int(d.get("num_experts_per_tok", 2)),
        moe_layers=[i for i in range(n_layers) if i not in dense and (i + 1) % step == 0],
        router_weights="st" if d.get("norm_topk_prob", True) else "raw",
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_number(v: Any) -> int | float | None:
    """A number kept an int when it is one (transformers' strict configs type query_pre_attn_scalar int)."""
    f = _opt_float(v)
    return int(f) if f is not None and f.is_integer() else f


def _read_window(
    d: dict[str, Any], family: str, model_type: str, n_layers: int
) -> tuple[int | None, list[LayerType] | None]:
    """(sliding_window, layer_types) as the family's transformers config derives them."""
    layer_types = d.get("layer_types")
    if family in ("qwen2", "qwen3"):
        if not d.get("use_sliding_window") or d.get("sliding_window") is None:
            return None, None
        if layer_types is None:
            first = int(d.get("max_window_layers", 28))
            layer_types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
        return int(d["sliding_window"]), list(layer_types)
    if family in _GEMMA_SLIDING_PATTERN:
        if layer_types is None:
            n = int(d.get("sliding_window_pattern") or _GEMMA_SLIDING_PATTERN[family])
            layer_types = ["sliding_attention" if (i + 1) % n else "full_attention" for i in range(n_layers)]
        window = d.get("sliding_window", 4096)
        return (None if window is None else int(window)), list(layer_types)
    if family in ("mistral", "phi3") or model_type in ("mixtral", "moelab"):
        window = d.get("sliding_window")
        if layer_types is not None and model_type in FAMILIES:
            raise ConfigError(f"layer_types: per-layer windows are not supported for {family}")
        return (None if window is None else int(window)), (None if layer_types is None else list(layer_types))
    return None, None


def _rope_fields(params: dict[str, Any], scaling: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(scaling or {})
    for k, v in params.items():
        if k != "rope_theta":
            merged.setdefault(k, v)
    if "type" in merged and "rope_type" not in merged:
        merged["rope_type"] = merged.pop("type")
    return merged


def _read_rope(
    d: dict[str, Any], family: str, source: str
) -> tuple[float, dict[str, Any] | None, float | None]:
    """RoPE theta, scaling and (Gemma3) the sliding layers' theta, from transformers 4 (`rope_theta`,
    `rope_scaling`, `rope_local_base_freq`) or 5 (`rope_parameters`, per layer type for Gemma3)."""
    params = d.get("rope_parameters") or {}
    local_theta = None
    default_theta = 10000.0
    if family == "gemma3_text":
        default_theta = 1_000_000.0
        local = params.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise ConfigError(
                f"{source}: rope_type {local['rope_type']!r} on sliding layers is not supported (default is)"
            )
        local_theta = float(local.get("rope_theta", d.get("rope_local_base_freq", 10000.0)))
        params = params.get("full_attention") or ({} if "sliding_attention" in params else params)
    theta = float(params.get("rope_theta", d.get("rope_theta", default_theta)))
    merged = _rope_fields(params, d.get("rope_scaling") or None)
    partial = float(merged.pop("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) or 1.0)
    if partial != 1.0:
        raise ConfigError(
            f"{source}: partial_rotary_factor {partial} is not supported (rotary over the whole head only)"
        )
    kind = merged.get("rope_type", "default")
    if kind not in ROPE_TYPES:
        raise ConfigError(f"{source}: rope_type {kind!r} is not supported ({', '.join(ROPE_TYPES)} are)")
    return theta, (None if kind == "default" else merged), local_theta
