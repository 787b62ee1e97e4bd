"""``qwen3``: the plain decoder-only baseline, transformers' ``Qwen3ForCausalLM`` over the SID vocabulary.

The only changes to the Hugging Face model are the ones the input contract needs:
- it accepts (and ignores) the per-token ``slot`` / ``behavior`` / ``level`` tensors;
- position ids are counted over real tokens (``attention_mask``), so left-padded prompts, right-padded
  training batches and cached decoding all see the same positions;
- the loss is cross-entropy on ``logits / temperature`` (the reference trains with temperature 0.7).
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from transformers import Qwen3Config, Qwen3ForCausalLM
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .common import drop_metadata, position_ids_from_mask, tempered_cross_entropy


@strict
class Qwen3RecConfig(Qwen3Config):
    model_type = "seqrec_qwen3"

    loss_temperature: float = 0.7  # loss = CE(logits / loss_temperature); not a generation setting
    # TokenVocab.to_dict() of the vocabulary the model was built for, so a checkpoint is self-describing.
    vocab: dict | None = None


class Qwen3RecForCausalLM(Qwen3ForCausalLM):
    config_class = Qwen3RecConfig
    config: Qwen3RecConfig

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        slot: torch.LongTensor | None = None,
        behavior: torch.LongTensor | None = None,
        level: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        cache = cache if cache is not None else past_key_values
        if position_ids is None and attention_mask is not None:
            past_length = cache.get_seq_length() if cache is not None else 0
            position_ids = position_ids_from_mask(attention_mask, input_ids.shape[1], past_length, input_ids.device)
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **drop_metadata(kwargs),
        )
        if labels is not None:
            outputs.loss = tempered_cross_entropy(outputs.logits, labels, self.config.loss_temperature, shift=True)
        return outputs
