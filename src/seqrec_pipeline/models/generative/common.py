"""Pieces shared by the generative models: the input contract, the tempered loss and position ids.

Input contract (docs/design.md#token-layout).  Every model accepts the same keyword arguments, all int64 ``[B, S]``:

- ``input_ids``, ``attention_mask`` (1 real, 0 pad; training batches are right-padded, evaluation prompts
  left-padded);
- ``slot``: position inside the item block, ``0..P-1`` (slot 0 is the behavior token when the vocabulary uses
  behavior tokens), 0 on pads;
- ``behavior``: behavior index of the block a token belongs to, 0 on pads;
- ``level``: behavior level of the block (higher = stronger intent), 0 on pads;
- ``session``: rank of the block's session inside the sequence (0 = its first session), 0 on pads; read by the
  session variants only (``qwen3_session``, ``gamer_session``, ``qwen3_session_moe``);
- ``labels``: token ids with -100 on behavior tokens and pads.

``qwen3`` and ``tiger`` ignore ``slot`` / ``behavior`` / ``level`` / ``session``; they accept them so one collator
serves all models.  Nothing here parses token ids to recover metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithPast

IGNORE_INDEX = -100
METADATA_KEYS = ("slot", "behavior", "level", "session")


def tempered_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, shift: bool = True
) -> torch.Tensor:
    """Mean cross-entropy of ``logits / temperature`` against ``labels``, ignoring ``IGNORE_INDEX``.

    ``shift=True`` is the causal-LM convention (position t predicts label t+1); encoder-decoder models pass
    labels already aligned with the decoder outputs (``shift=False``).  A batch without any target token
    gives a loss of 0 instead of NaN, so an all-masked micro-batch cannot poison gradient accumulation.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    # The softmax runs in fp32 even for bf16 models: the loss is a sum over ~1k-way distributions.
    logits = logits.float() / temperature
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    n_targets = (labels != IGNORE_INDEX).sum()
    return total / n_targets.clamp(min=1)


def item_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, item_labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the item head at the positions whose *next* token starts an item
    (``item_labels[:, 1:]``, causal shift); only those rows are projected onto the catalog."""
    targets = item_labels[:, 1:]
    rows = targets != IGNORE_INDEX
    if not bool(rows.any()):
        return hidden.sum() * 0.0
    return F.cross_entropy(head(hidden[:, :-1][rows]).float(), targets[rows])


def item_keys(code_tokens: torch.Tensor, base: int) -> torch.Tensor:
    """One int64 key per row of code token ids ``[..., L]``: the tokens as the digits of a number in ``base`` (the
    vocabulary size), so that a block's tokens find their catalog item by one sorted search."""
    n_codes = code_tokens.shape[-1]
    if base**n_codes >= 2**63:
        raise ValueError(f"{n_codes} code tokens of a {base}-token vocabulary do not fit an int64 key")
    powers = base ** torch.arange(n_codes - 1, -1, -1, device=code_tokens.device)
    return (code_tokens.long() * powers).sum(-1)


def block_items(input_ids: torch.Tensor, slot: torch.Tensor, sorted_keys: torch.Tensor, order: torch.Tensor,
                n_codes: int, last_slot: int, base: int) -> torch.Tensor:
    """The catalog index of the item whose block ends at each position of ``input_ids`` ``[B, S]``, -1 elsewhere.

    A position counts when its slot is ``last_slot`` and the ``n_codes`` tokens ending there are a catalog item's
    codes (``sorted_keys, order``: ``torch.sort`` of :func:`item_keys` of the SID table's tokens).  So one forward
    must hold an item's whole block: a training window or a history prefill does; a decoding step feeds the codes
    of an unfinished item, never its last one."""
    windows = F.pad(input_ids, (n_codes - 1, 0)).unfold(1, n_codes, 1)  # [B, S, L]: the tokens ending at each one
    keys = item_keys(windows, base)
    at = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    found = (slot == last_slot) & (sorted_keys[at] == keys)
    return torch.where(found, order[at], -1)


@dataclass
class RecLMOutput(CausalLMOutputWithPast):
    """A causal LM output with the item head's logits at the last position (``None`` without the head)."""

    item_logits: torch.FloatTensor | None = None


def position_ids_from_mask(
    attention_mask: torch.Tensor | None, query_length: int, past_length: int, device: torch.device
) -> torch.Tensor:
    """Positions of the ``query_length`` newest tokens, counted over real (unmasked) tokens only.

    ``attention_mask`` covers past + new tokens (the Hugging Face convention).  Counting only real tokens
    makes a left-padded prompt see the same positions as the unpadded one, and keeps prefill and
    token-by-token decoding consistent.  Pads get position 0; their outputs are never used.
    """
    if attention_mask is None:
        return torch.arange(past_length, past_length + query_length, device=device).unsqueeze(0)
    if attention_mask.shape[1] != past_length + query_length:
        raise ValueError(
            f"attention_mask must cover the cached and the new tokens: expected length "
            f"{past_length + query_length} (past {past_length} + new {query_length}), got {attention_mask.shape[1]}"
        )
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)[:, -query_length:]


def drop_metadata(kwargs: dict) -> dict:
    """Remove the per-token metadata (and its decoder-side twins) that a model does not use."""
    unused = set(METADATA_KEYS) | {f"decoder_{key}" for key in METADATA_KEYS}
    return {key: value for key, value in kwargs.items() if key not in unused}


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` whose CPU mask is drawn as ``uniform >= p``: the same distribution, but CPU
    ``bernoulli_`` (what ``F.dropout`` and SDPA's math path use) is slower than ``rand`` + compare.
    Other devices keep the fused ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return x * (torch.rand_like(x) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(torch.nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s CPU mask.  Same ``p`` / ``training`` semantics and no parameters
    (checkpoints unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace and x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, True)
        return dropout(x, self.p, self.training)
