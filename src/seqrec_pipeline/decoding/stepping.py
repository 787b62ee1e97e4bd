"""One interface over the three model families for cached, batched decoding, and the score normalization.

:class:`ModelStepper` hides the difference between decoder-only models (``qwen3``, ``gamer``: prefill the
history, then feed tokens) and the encoder-decoders ``tiger`` / ``mbgen`` (encode the history once, prefill the
decoder with ``<bos>``, then feed decoder tokens with their behavior).  A :class:`DecodeState` is a batch of decoding *rows*; rows are
gathered (expanded to beams, reordered, shared across behaviors) with :meth:`ModelStepper.select`, which
uses ``Cache.reorder_cache`` (an ``index_select`` on every cache layer, so it accepts repeated indices and
a new row count) and then keeps the cache in preallocated buffers (``kv_buffer.py``), so later steps append
in place and beam reorders move only the generated positions.  For ``qwen3`` (transformers' attention
backends) the history is not even expanded to the beams: it stays once per query and attention reads it
once for all of the query's beams (``shared_prefix.py``).  Every call stays on the device.

:func:`level_log_probs` turns next-token logits into the log-probabilities of one code level (or of the
behavior tokens), with the two explicit switches: ``temperature`` and
``renormalize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, Qwen3ForCausalLM
from transformers.modeling_outputs import BaseModelOutput

from ..errors import InputError
from ..models.generative.factory import vocab_of
from ..vocab import BOS, TokenVocab
from .kv_buffer import buffer_cache, reorder_tail
from .prompts import PromptBatch
from .shared_prefix import select_shared, shared_prefix_backend, to_shared_prefix


def resolve_temperature(model: PreTrainedModel, temperature: float | None) -> float:
    """``temperature`` if given, else the model config's ``loss_temperature`` (the T it was trained with), else 1."""
    if temperature is None:
        temperature = getattr(model.config, "loss_temperature", None) or 1.0
    temperature = float(temperature)
    if not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    return temperature


def level_log_probs(
    logits: torch.Tensor, start: int, stop: int, allowed: torch.Tensor, renormalize: bool, temperature: float
) -> torch.Tensor:
    """Log-probabilities of tokens ``start..stop-1`` given next-token ``logits [..., V]``; -inf where not ``allowed``.

    ``renormalize=False``: log-softmax over the whole vocabulary, then the disallowed tokens are dropped (the
    reference's scores).  ``renormalize=True``: log-softmax over the allowed tokens only.  Rows that allow
    nothing (dead beams) are -inf everywhere, never NaN.
    """
    z = logits.float() / temperature  # fp32: sums of log-probs over several levels
    if renormalize:
        sub = z[..., start:stop].masked_fill(~allowed, float("-inf"))
        norm = torch.logsumexp(sub, dim=-1, keepdim=True)
        return sub - torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
    return torch.log_softmax(z, dim=-1)[..., start:stop].masked_fill(~allowed, float("-inf"))


@dataclass
class DecodeState:
    """Rows being decoded.  ``attention_mask``: decoder-only, covers every cached token; tiger, the encoder mask."""

    cache: object
    attention_mask: torch.Tensor
    source: torch.Tensor  # [R] prompt row (within the prefilled batch) each decoding row descends from
    encoder_states: torch.Tensor | None = None  # tiger: [B, S, H] of the prefilled batch
    encoder_rows: torch.Tensor | None = None  # tiger: encoder_states[source], kept while R is unchanged
    buffered: bool = False  # cache layers are BufferedLayers (after the first select)
    # session models: the generated item's session rank per row (one after the history's last session)
    next_session: torch.Tensor | None = None
    # models with an item head: its logits [R, n_items] where the last fed token starts an item (when asked for)
    item_logits: torch.Tensor | None = None

    @property
    def n_rows(self) -> int:
        return self.source.shape[0]


class ModelStepper:
    """Prefill / select / step for ``qwen3``, ``gamer`` and ``tiger``."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.vocab: TokenVocab = vocab_of(model)
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.device = next(model.parameters()).device
        # gamer (its own attention and cache) and tiger keep per-row buffered caches
        self.shared_prefix = isinstance(model, Qwen3ForCausalLM)
        self.uses_sessions = bool(getattr(model.config, "session_mask", False))

    @property
    def has_item_head(self) -> bool:
        return getattr(self.model, "item_head", None) is not None

    def prefill(self, prompts: PromptBatch, item_logits: bool = False) -> tuple[DecodeState, torch.Tensor]:
        """Run the history once; returns the state and the next-token logits ``[B, V]`` after it (``item_logits``:
        keep the item head's logits after it in ``state.item_logits``)."""
        prompts = prompts.to(self.device)
        source = torch.arange(len(prompts), device=self.device)
        if self.is_encoder_decoder:
            states = self.model.encode(
                prompts.input_ids, prompts.attention_mask, slot=prompts.slot, behavior=prompts.behavior
            ).last_hidden_state
            bos = torch.full((len(prompts), 1), BOS, dtype=torch.long, device=self.device)
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=prompts.attention_mask,
                decoder_input_ids=bos,
                use_cache=True,
            )
            state = DecodeState(out.cache, prompts.attention_mask, source, states, states)
            return state, out.logits[:, -1]
        extra = {"return_item_logits": True} if item_logits and self.has_item_head else {}
        out = self.model(**prompts.model_inputs(), use_cache=True, logits_to_keep=1, **extra)
        next_session = prompts.session.max(dim=1).values + 1 if self.uses_sessions else None
        state = DecodeState(out.cache, prompts.attention_mask, source, next_session=next_session,
                            item_logits=getattr(out, "item_logits", None))
        return state, out.logits[:, -1]

    def select(self, state: DecodeState, rows: torch.Tensor, same_sources: bool = False) -> None:
        """Keep rows ``rows`` (any length, repeats allowed) of the state, in that order, in place.

        ``same_sources=True`` promises a beam expansion or reorder: the new rows are grouped by the current
        blocks of rows (one block per query), the same number for every block, each from its own block.  Then
        qwen3 keeps the history shared per query, and if the row count is unchanged, tiger keeps its gathered
        encoder states instead of gathering again.
        """
        keep_encoder_rows = same_sources and rows.shape[0] == state.n_rows
        if self.shared_prefix:
            if not state.buffered:  # the prefilled history becomes the shared part, room for one item block
                to_shared_prefix(state.cache, state.attention_mask, capacity=self.vocab.block_size + 1)
                state.buffered = True
            select_shared(state.cache, rows, same_sources)
        elif not (keep_encoder_rows and reorder_tail(state.cache, rows)):
            state.cache.reorder_cache(rows)
            if not state.buffered:  # the rows now decode: room for one item block, history shared per user
                buffer_cache(state.cache, extra=self.vocab.block_size + 1)
                state.buffered = True
        state.attention_mask = state.attention_mask.index_select(0, rows)
        state.source = state.source.index_select(0, rows)
        if state.next_session is not None:
            state.next_session = state.next_session.index_select(0, rows)
        if state.encoder_states is not None and not keep_encoder_rows:
            state.encoder_rows = state.encoder_states.index_select(0, state.source)

    def step(
        self, state: DecodeState, tokens: torch.Tensor, slot: torch.Tensor, behavior: torch.Tensor, level: torch.Tensor,
        item_logits: bool = False,
    ) -> torch.Tensor:
        """Feed ``tokens [R, n]`` (with their metadata, same shape) to every row; returns logits ``[R, n, V]``.
        Session models get the session rank after the history's last one (the target is a new session).
        ``item_logits``: keep the item head's logits after the last token in ``state.item_logits``."""
        if self.is_encoder_decoder:
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=state.encoder_rows),
                attention_mask=state.attention_mask,
                decoder_input_ids=tokens,
                decoder_behavior=behavior,  # the target block's behavior (mbgen's decoder injection)
                cache=state.cache,
                use_cache=True,
            )
        else:
            state.attention_mask = torch.cat([state.attention_mask, state.attention_mask.new_ones(tokens.shape)], 1)
            inputs = dict(input_ids=tokens, attention_mask=state.attention_mask, slot=slot, behavior=behavior,
                          level=level, cache=state.cache, use_cache=True)
            if state.next_session is not None:  # every generated token belongs to the new (target) session
                inputs["session"] = state.next_session[:, None].expand_as(tokens)
            if item_logits and self.has_item_head:
                inputs["return_item_logits"] = True
            if self.shared_prefix and state.buffered:
                with shared_prefix_backend(self.model):
                    out = self.model(**inputs, shared_prefix=state.cache)
            else:
                out = self.model(**inputs)
        state.cache = out.cache
        state.item_logits = getattr(out, "item_logits", None)
        return out.logits

    def rewind(self, state: DecodeState, n_tokens: int) -> None:
        """Forget the last ``n_tokens`` fed tokens of every row (used to score several continuations)."""
        state.cache.crop(-n_tokens)
        if not self.is_encoder_decoder:
            state.attention_mask = state.attention_mask[:, :-n_tokens]
