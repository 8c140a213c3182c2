"""The Hugging Face face of the engine's decoder, for checkpoints of model_type `moelab`.

Bundled after the engine's model sources into the checkpoint's modeling_moelab.py (see bundle.py),
where `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` finds it through
config.json's auto_map. It maps config.json onto `ModelConfig`, runs the engine's `Model`, and
loads the per-expert tensors of the disk layout into the stacked parameters (io/layout.py) with
transformers' own weight conversions. Within MoE Lab it is imported by tests only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import MergeModulelist, WeightConverter
from transformers.modeling_outputs import MoeCausalLMOutputWithPast

from moelab.models.config import ModelConfig
from moelab.models.model import Model, lm_logits
from moelab.models.rope import RotaryEmbedding


def _disk_name(stacked: str) -> str:
    """The per-expert disk tensor of a stacked parameter `experts.NAME` (io/layout.py's rule):
    `experts.E.NAME.weight`, and for the stacked biases `X_bias`, `experts.E.X_proj.bias`."""
    return f"{stacked[0]}_proj.bias" if stacked.endswith("_bias") else f"{stacked}.weight"


class MoELabConfig(PretrainedConfig):
    """config.json of a `moelab` checkpoint, kept as written; `engine_config()` reads it."""

    model_type = "moelab"

    def engine_config(self) -> ModelConfig:
        return ModelConfig.from_hf_dict(self.to_dict(), source="config.json")


class MoELabHFForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MoELabConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]
    _supports_sdpa = True

    def __init__(self, config: MoELabConfig) -> None:
        super().__init__(config)
        cfg = self.engine_config = config.engine_config()
        self.model = Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self._tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
        self._register_expert_conversions()
        self.post_init()

    def _register_expert_conversions(self) -> None:
        """The stacked expert parameters (those directly under an `experts` module) are loaded by
        transformers' weight conversions, which merge the per-expert tensors of the disk layout
        (and split them again on save_pretrained)."""
        stacked = sorted(
            {
                name.rpartition(".")[2]
                for name, _ in self.named_parameters()
                if name.rpartition(".")[0].endswith(".experts")
            }
        )
        register_checkpoint_conversion_mapping(
            type(self).__name__,
            [
                WeightConverter(
                    source_patterns=[f".experts.*.{_disk_name(n)}"],
                    target_patterns=f".experts.{n}",
                    operations=[MergeModulelist(dim=0)],
                )
                for n in stacked
            ],
            overwrite=True,
        )

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only tensors a checkpoint lacks are initialised here; the rotary frequencies are derived.
        super()._init_weights(module)
        if isinstance(module, RotaryEmbedding):
            module.inv_freq.copy_(module.frequencies().to(module.inv_freq.device))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> MoeCausalLMOutputWithPast:
        if input_ids is None:
            raise ValueError("MoE Lab models take input_ids (inputs_embeds is not supported)")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("MoE Lab models do not support padded batches (attention_mask with zeros)")
        if use_cache is None:
            use_cache = getattr(self.config, "use_cache", True)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        hidden, routers = self.model(input_ids, past_key_values if use_cache else None)
        logits = lm_logits(
            self.engine_config, self.lm_head, hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        )
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        # transformers annotates torch.FloatTensor, the legacy class no computed tensor is typed as.
        return MoeCausalLMOutputWithPast(
            loss=loss,  # type: ignore[arg-type]
            logits=logits,  # type: ignore[arg-type]
            past_key_values=past_key_values if use_cache else None,
            router_logits=tuple(r.logits for r in routers),
        )
