"""``tiger``: TIGER's T5 encoder-decoder (history -> target item block) over the SID vocabulary only.

``tiger_mb`` (the GAMER paper's TIGER_MB baseline) is the same model with ``predict_behavior=True``: the
target is the behavior-item, so the behavior token carries loss too and the model can predict the next
behavior (``behavior_item`` decoding) as well as the item for a requested one.

The reference carried T5's unused 32k SentencePiece vocabulary; here the embedding table is exactly the
``TokenVocab`` (pad 0, decoder start = bos 1, eos 2).

Inputs: ``input_ids`` / ``attention_mask`` are the history (encoder side, either padding side: T5's relative
position bias only sees distances).  The decoder side is the target block: ``decoder_input_ids`` =
``[bos, behavior, c_1, ..., c_L]`` and ``labels`` = ``[behavior, c_1, ..., c_L, eos]`` with -100 on the
behavior token (not for ``tiger_mb``).  Because the behavior token is masked in ``labels``, shifting ``labels`` cannot rebuild the
decoder input; build it from the unmasked target with :func:`shift_targets_right`.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from ...vocab import BOS, PAD
from .common import IGNORE_INDEX, drop_metadata, tempered_cross_entropy


@strict
class TigerConfig(T5Config):
    model_type = "seqrec_tiger"

    decoder_start_token_id: int = BOS
    loss_temperature: float = 0.7  # loss = CE(logits / loss_temperature); not a generation setting
    # True when targets start with a behavior token (masked, -100, in the labels unless predict_behavior).
    use_behavior_token: bool = True
    predict_behavior: bool = False  # tiger_mb: the behavior token is a target as well
    vocab: dict | None = None


def shift_targets_right(target_ids: torch.LongTensor, start_token_id: int = BOS) -> torch.LongTensor:
    """Decoder input for teacher forcing: ``[start] + target[:-1]``; -100 entries become pad."""
    shifted = target_ids.new_full(target_ids.shape, PAD)
    shifted[:, 1:] = target_ids[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted == IGNORE_INDEX, PAD)


class TigerForConditionalGeneration(T5ForConditionalGeneration):
    config_class = TigerConfig
    config: TigerConfig

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs=None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """T5's forward; the per-token metadata (``slot``, ``behavior``, ... and their ``decoder_`` twins) go to
        :meth:`stack_inputs`, which keeps what the encoder / decoder stacks read (nothing, for tiger)."""
        cache = cache if cache is not None else past_key_values
        if labels is not None and decoder_input_ids is None:
            if self.config.use_behavior_token:
                raise ValueError(
                    "tiger: pass decoder_input_ids = shift_targets_right(target_ids); with behavior tokens the "
                    "labels mask the behavior token (-100), so they cannot be shifted into the decoder input"
                )
            decoder_input_ids = shift_targets_right(labels, self.config.decoder_start_token_id)
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            **self.stack_inputs(kwargs),
        )
        if labels is not None:
            outputs.loss = tempered_cross_entropy(outputs.logits, labels, self.config.loss_temperature, shift=False)
        return outputs

    def stack_inputs(self, kwargs: dict) -> dict:
        """The keyword inputs passed on to T5's forward (and from there to both stacks)."""
        return drop_metadata(kwargs)

    def encode(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        slot: torch.LongTensor | None = None,
        behavior: torch.LongTensor | None = None,
    ) -> BaseModelOutput:
        """Run the encoder once over histories (decoding); tiger reads no metadata."""
        return self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)


__all__ = ["TigerConfig", "TigerForConditionalGeneration", "shift_targets_right"]
