"""``mbgen``: MBGen-style generative recommender (docs/design.md#mbgen).

Reference: Z. Liu, Y. Hou, J. McAuley, "Multi-Behavior Generative Recommendation", CIKM 2024, as re-created by
[GAMER-code] ``SeqRec/models/PBATransformer`` (commit ``00fabd48b15f``): TIGER's T5 encoder-decoder (``tiger.py``:
same stacks, caches and loss) whose FFN sub-layers (:class:`MbgenLayerFF`) are, in ``sparse_layers`` of the
decoder, one T5 ReLU expert per decoder position (the slot of the token it predicts; ``experts.py``), with the
block's behavior embedding concatenated to the FFN input in the ``*_injection_layers`` and an optional expert
shared by all positions (``shared_expert``: each half of the output).  The target is the behavior-item, as
``tiger_mb``.  Deviation: experts and injected behavior come from the decoder position and ``decoder_behavior``
instead of a router re-reading token ids (which sent every cached step to one expert without the behavior), so
cached decoding equals teacher forcing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.t5.modeling_t5 import T5Block, T5LayerNorm, T5Stack

from .common import METADATA_KEYS, Dropout
from .experts import EXPERT_IMPLS, SlotExpertFFN, SlotRouting, injection_index
from .tiger import TigerConfig, TigerForConditionalGeneration


@strict
class MbgenConfig(TigerConfig):
    """TIGER's T5 fields plus the sparse / injection layout.  ``d_ff`` is each expert's width."""

    model_type = "seqrec_mbgen"

    num_slots: int = 5  # P: tokens per item block (TokenVocab.block_size); the decoder has P + 1 positions
    num_behaviors: int = 1
    behavior_embed_dim: int = 64
    sparse_layers: list[int] | None = None  # decoder layers with position experts; default: all
    encoder_injection_layers: list[int] | None = None  # default: none
    decoder_injection_layers: list[int] | None = None  # default: none
    shared_expert: bool = False
    expert_impl: str = "auto"  # "auto" | "grouped_mm" | "bmm"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.sparse_layers is None:
            self.sparse_layers = list(range(self.num_decoder_layers))
        self.sparse_layers = sorted(int(i) for i in self.sparse_layers)
        self.encoder_injection_layers = sorted(int(i) for i in self.encoder_injection_layers or [])
        self.decoder_injection_layers = sorted(int(i) for i in self.decoder_injection_layers or [])

    def validate_architecture(self):
        """Part of the ``@strict`` validation."""
        super().validate_architecture()
        for name, n_layers in (("sparse_layers", self.num_decoder_layers), ("encoder_injection_layers",
                               self.num_layers), ("decoder_injection_layers", self.num_decoder_layers)):  # fmt: skip
            bad = [i for i in getattr(self, name) if not 0 <= i < n_layers]
            if bad:
                raise ValueError(f"{name} {bad} outside 0..{n_layers - 1}")
        if self.expert_impl not in EXPERT_IMPLS:
            raise ValueError(f"expert_impl must be one of {EXPERT_IMPLS}, got {self.expert_impl!r}")
        if self.num_slots < 1 or self.num_behaviors < 1:
            raise ValueError("num_slots and num_behaviors must be >= 1")
        if self.shared_expert and self.d_model % 2:
            raise ValueError(f"shared_expert splits the output in halves: d_model must be even, got {self.d_model}")

    @property
    def num_decoder_experts(self) -> int:
        return self.num_slots + 1


@dataclass
class FFNInputs:
    """What the FFN sub-layers of one stack forward read, computed once per forward: the token -> expert
    routing of sparse layers (``None`` in the encoder), the one-expert routing of dense layers and shared
    experts, and each token's row of the behavior-injection table (0 = none)."""

    sparse: SlotRouting | None
    dense: SlotRouting
    injection: torch.Tensor


class MbgenLayerFF(nn.Module):
    """T5's FFN sub-layer (RMS norm, FFN, dropout, residual) with slot experts, injection and a shared expert."""

    def __init__(self, config: MbgenConfig, sparse: bool, injection: bool) -> None:
        super().__init__()
        d_model = config.d_model
        extra = config.behavior_embed_dim if injection else 0
        self.sparse = sparse
        shared = sparse and config.shared_expert
        own_width = d_model // 2 if shared else d_model

        def ffn(n_experts: int, width: int) -> SlotExpertFFN:
            return SlotExpertFFN(n_experts, d_model + extra, config.d_ff, width, config.dense_act_fn,
                                 config.expert_impl, gated=config.is_gated_act)  # fmt: skip

        self.layer_norm = T5LayerNorm(d_model, eps=config.layer_norm_epsilon)
        self.experts = ffn(config.num_decoder_experts if sparse else 1, own_width)
        self.shared_expert = ffn(1, d_model - own_width) if shared else None
        # Row 0 = "no behavior" (behavior tokens, pads, <bos>): kept at zero by padding_idx.
        self.behavior_embed = (
            nn.Embedding(config.num_behaviors + 1, extra, padding_idx=0) if injection else None
        )  # fmt: skip
        self.dropout = Dropout(config.dropout_rate)

    def forward(self, hidden_states: torch.Tensor, inputs: FFNInputs) -> torch.Tensor:
        x = self.layer_norm(hidden_states)
        extra = (self.behavior_embed.weight, inputs.injection) if self.behavior_embed is not None else ()
        y = self.experts(x, inputs.sparse if self.sparse else inputs.dense, *extra)
        if self.shared_expert is not None:
            y = torch.cat([y, self.shared_expert(x, inputs.dense, *extra)], dim=-1)
        return hidden_states + self.dropout(y)


class MbgenBlock(T5Block):
    """A T5 block whose FFN sub-layer reads the stack's :class:`FFNInputs` (passed down as ``ffn_inputs``)."""

    def __init__(self, config: MbgenConfig, layer_idx: int, sparse: bool, injection: bool) -> None:
        super().__init__(config, has_relative_attention_bias=layer_idx == 0, layer_idx=layer_idx)
        self.layer[-1] = MbgenLayerFF(config, sparse, injection)

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        position_bias=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        encoder_decoder_position_bias=None,
        cache=None,
        ffn_inputs: FFNInputs | None = None,
        **kwargs,
    ):
        hidden_states, self_bias, _ = self.layer[0](
            hidden_states, attention_mask=attention_mask, position_bias=position_bias, cache=cache, **kwargs
        )
        cross_bias = None
        if self.is_decoder and encoder_hidden_states is not None:
            hidden_states, cross_bias, _ = self.layer[1](
                hidden_states,
                key_value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                position_bias=encoder_decoder_position_bias,
                cache=cache,
                **kwargs,
            )
        return self.layer[-1](hidden_states, ffn_inputs), self_bias, cross_bias


class _MbgenInit:
    """T5's initialization plus the expert weights (at the scales of T5's ``DenseActDense``)."""

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers skips modules without parameters of their own (T5Attention: only child Linears) in
        # "custom code", in case that code bypasses ``transformers.initialization``; ours uses it.
        return False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SlotExpertFFN):
            factor = self.config.initializer_factor
            init.normal_(module.gate_up_proj, mean=0.0, std=factor * self.config.d_model**-0.5)
            init.normal_(module.down_proj, mean=0.0, std=factor * self.config.d_ff**-0.5)


class MbgenStack(_MbgenInit, T5Stack):
    """T5's encoder or decoder stack of :class:`MbgenBlock` s.

    Encoder: ``slot`` / ``behavior`` of the history tokens (common.py) give the injection rows.  Decoder: the
    experts follow the decoder position (cached + new), ``decoder_behavior`` (the target block's behavior,
    per decoder token) the injection rows.  The metadata of the other side is ignored, so one set of keyword
    inputs serves both stacks.
    """

    def __init__(self, config: MbgenConfig) -> None:
        super().__init__(config)
        sparse = config.sparse_layers if config.is_decoder else []
        injection = config.decoder_injection_layers if config.is_decoder else config.encoder_injection_layers
        self.block = nn.ModuleList(
            [MbgenBlock(config, i, i in sparse, i in injection) for i in range(config.num_layers)]
        )  # fmt: skip
        self.has_injection = bool(injection)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        cache=None,
        slot: torch.LongTensor | None = None,
        behavior: torch.LongTensor | None = None,
        decoder_behavior: torch.LongTensor | None = None,
        **kwargs,
    ):
        kwargs = {key: value for key, value in kwargs.items() if key not in _METADATA}
        if self.is_decoder:
            inputs = self._decoder_inputs(input_ids, cache, decoder_behavior)
        else:
            inputs = self._encoder_inputs(input_ids, attention_mask, slot, behavior)
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, cache=cache, ffn_inputs=inputs, **kwargs
        )

    def _encoder_inputs(self, input_ids, attention_mask, slot, behavior) -> FFNInputs:
        dense = _one_expert(input_ids)
        if not self.has_injection:
            return FFNInputs(None, dense, torch.zeros_like(input_ids))
        if slot is None or behavior is None:
            raise ValueError("mbgen's encoder injects behaviors: it needs the per-token slot and behavior tensors")
        valid = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        return FFNInputs(None, dense, injection_index(slot, behavior, valid, self.config.use_behavior_token))

    def _decoder_inputs(self, input_ids, cache: Cache | None, decoder_behavior) -> FFNInputs:
        past = cache.get_seq_length() if cache is not None else 0
        position = torch.arange(past, past + input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        sparse = SlotRouting.from_slots(position, self.config.num_decoder_experts)
        if not self.has_injection:
            return FFNInputs(sparse, _one_expert(input_ids), torch.zeros_like(input_ids))
        if decoder_behavior is None:
            if past + input_ids.shape[1] > 1:  # only <bos> alone has no behavior to inject
                raise ValueError("mbgen's decoder injects the target behavior: pass decoder_behavior")
            decoder_behavior = torch.zeros_like(input_ids)
        # <bos> (position 0) has no block behavior; every later position gets the target's.
        injection = torch.where(position > 0, decoder_behavior + 1, 0)
        return FFNInputs(sparse, _one_expert(input_ids), injection)


_METADATA = set(METADATA_KEYS) | {f"decoder_{key}" for key in METADATA_KEYS}


def _one_expert(input_ids: torch.Tensor) -> SlotRouting:
    return SlotRouting.from_slots(torch.zeros_like(input_ids), 1)


class MbgenForConditionalGeneration(_MbgenInit, TigerForConditionalGeneration):
    config_class = MbgenConfig
    config: MbgenConfig
    _no_split_modules = ["MbgenBlock"]

    def __init__(self, config: MbgenConfig) -> None:
        super().__init__(config)
        # T5's own stacks, rebuilt with Mbgen blocks (same construction as T5ForConditionalGeneration's).
        encoder_config = copy.deepcopy(config)
        encoder_config.is_decoder, encoder_config.use_cache = False, False
        decoder_config = copy.deepcopy(config)
        decoder_config.is_decoder, decoder_config.num_layers = True, config.num_decoder_layers
        self.encoder, self.decoder = MbgenStack(encoder_config), MbgenStack(decoder_config)
        self.post_init()

    def stack_inputs(self, kwargs: dict) -> dict:
        keep = {"slot", "behavior", "decoder_behavior"}
        return {key: value for key, value in kwargs.items() if key in keep or key not in _METADATA}

    def encode(self, input_ids, attention_mask, slot=None, behavior=None) -> BaseModelOutput:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, slot=slot, behavior=behavior)


__all__ = ["MbgenConfig", "MbgenForConditionalGeneration"]
