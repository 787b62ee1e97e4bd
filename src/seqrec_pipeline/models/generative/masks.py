"""Attention masks and position ids of the decoder family built on ``gamer.py`` (docs/design.md#session-models).

Every mask is boolean (True = may attend), built on the device from small per-token index vectors, for the
``Q`` new tokens of a forward against all ``K = past + Q`` keys (cached + new):

- ``valid [B, K]``: the attention mask (1 real, 0 pad);
- ``level``: behavior level of the token's block;
- ``session``: rank of the block's session inside the sequence (non-decreasing along real tokens);
- ``block``: index of the token's item block, derived from ``slot`` by :func:`block_ids` (a block starts at
  every real token with slot 0).

Self-attention, for query i and key j (always ``j <= i`` and j real):

- causal: nothing more (qwen3, gamer);
- session (the reference's ``Qwen3Session*``): j in the same item block as i, or j in an earlier session;
  items of one session are an unordered set, so they never see each other.

Cross-level attention (gamer): ``level[j] < level[i]`` and the query is real; with sessions also
``session[j] < session[i]`` (the reference's ``Qwen3SessionMulti``).

A pad query (and any self-attention row left empty) keeps its own diagonal entry so that SDPA stays finite;
cross-level rows without a key get their diagonal and are zeroed afterwards (``cross_has_key``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenMeta:
    """Per-token index vectors ``[B, T]`` of either the new tokens (queries) or all positions (keys)."""

    level: torch.Tensor
    session: torch.Tensor | None = None
    block: torch.Tensor | None = None

    def stacked(self) -> torch.Tensor:
        """``[B, T, 3]`` (level, session, block) for the cache; missing fields are 0."""
        zeros = torch.zeros_like(self.level)
        parts = [self.level, self.session if self.session is not None else zeros,
                 self.block if self.block is not None else zeros]  # fmt: skip
        return torch.stack(parts, dim=-1)

    @classmethod
    def unstack(cls, meta: torch.Tensor) -> TokenMeta:
        return cls(meta[..., 0], meta[..., 1], meta[..., 2])


def block_ids(slot: torch.Tensor, valid_new: torch.Tensor, last_block: torch.Tensor | int = 0) -> torch.Tensor:
    """Item-block index of each new token: a block starts at every real token with slot 0.

    ``last_block [B]``: the block index of the newest cached position (0 without a cache), so a token fed after
    a cached prefix continues its block unless it starts a new one.  Pads carry the index of the block before
    them; they are never keys, so it does not matter.
    """
    starts = ((slot == 0) & valid_new.bool()).long()
    last = last_block[:, None] if isinstance(last_block, torch.Tensor) else last_block
    return starts.cumsum(dim=1) + last


def session_position_ids(session: torch.Tensor, slot: torch.Tensor, block_size: int) -> torch.Tensor:
    """RoPE positions of the session models: ``session * block_size + slot``.  Items of one session share
    positions (an unordered set); while an item is generated, the position advances by one per token."""
    return session * block_size + slot


def build_attention_masks(
    key_valid: torch.Tensor,
    query: TokenMeta | torch.Tensor,
    key: TokenMeta | torch.Tensor,
    past_length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(self_mask [B, 1, Q, K], cross_mask [B, 1, Q, K], cross_has_key [B, Q])`` (see the module doc).

    ``query`` / ``key`` are :class:`TokenMeta` (or bare level tensors: causal self-attention).  The session
    rule is used when both carry ``session`` and ``block``.
    """
    if isinstance(query, torch.Tensor):
        query = TokenMeta(query)
    if isinstance(key, torch.Tensor):
        key = TokenMeta(key)
    query_length, key_length = query.level.shape[1], key_valid.shape[1]
    device = key_valid.device
    query_pos = torch.arange(past_length, past_length + query_length, device=device)[:, None]
    key_pos = torch.arange(key_length, device=device)[None, :]
    causal = key_pos <= query_pos  # [Q, K]
    diagonal = key_pos == query_pos
    key_valid = key_valid.bool()
    query_valid = key_valid[:, past_length:]
    visible = causal & key_valid[:, None, :]  # [B, Q, K]

    sessions = query.session is not None and key.session is not None
    if sessions:
        earlier_session = key.session[:, None, :] < query.session[:, :, None]
        same_block = key.block[:, None, :] == query.block[:, :, None]
        # a pad query shares its block index with the block before it: only its diagonal, as every pad row
        self_mask = (visible & query_valid[:, :, None] & (same_block | earlier_session)) | diagonal
    else:
        self_mask = visible | diagonal

    cross_mask = visible & query_valid[:, :, None] & (key.level[:, None, :] < query.level[:, :, None])
    if sessions:
        cross_mask = cross_mask & earlier_session
    cross_has_key = cross_mask.any(dim=-1)
    cross_mask = cross_mask | (diagonal & ~cross_has_key[:, :, None])
    return self_mask[:, None], cross_mask[:, None], cross_has_key
