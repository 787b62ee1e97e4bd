"""Left-padded prompt batches for decoding: token ids plus the per-token metadata the models take.

The decoders take a :class:`PromptBatch` holding the **history only**; the behavior token of fixed-behavior
mode is appended by the decoder itself, after the history prefill, so that one prefill serves every behavior
evaluated for a user (docs/design.md#beam-search-and-scoring).  The data stage builds these batches from its own integer
arrays; :func:`build_prompts` makes them from per-user ``(item, behavior)`` histories for tests, benchmarks
and small callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..errors import InputError
from ..vocab import BOS, TokenVocab

FIELDS = ("input_ids", "attention_mask", "slot", "behavior", "level", "session")


@dataclass
class PromptBatch:
    """Left-padded histories, all int64 ``[n_users, S]``; pads are 0 everywhere (``attention_mask`` 0)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slot: torch.Tensor
    behavior: torch.Tensor
    level: torch.Tensor
    session: torch.Tensor  # rank of the event's session in the history (0 = its oldest), 0 on pads

    def __post_init__(self) -> None:
        shapes = {f.name: tuple(getattr(self, f.name).shape) for f in fields(self)}
        if len(set(shapes.values())) != 1 or len(shapes["input_ids"]) != 2:
            raise InputError(f"prompt tensors must all have the same shape [n_users, S], got {shapes}")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(*(getattr(self, name).to(device) for name in FIELDS))

    def rows(self, index: slice | torch.Tensor | np.ndarray) -> PromptBatch:
        """A subset of users, with the columns that are padding in every selected row dropped."""
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        selected = [getattr(self, name)[index] for name in FIELDS]
        lengths = selected[1].sum(dim=1)
        # One host read of the prompt lengths per batch (prompts normally live on the CPU anyway); keeps at
        # least one column so an all-empty batch still has a shape.
        width = max(int(lengths.max()) if len(lengths) else 0, 1)
        return PromptBatch(*(t[:, -width:] for t in selected))

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in FIELDS}


def build_prompts(
    histories: Sequence[Sequence[tuple[int, int]] | np.ndarray],
    codes: np.ndarray,
    vocab: TokenVocab,
    behavior_levels: Sequence[int] | np.ndarray | None = None,
    max_history: int | None = None,
    prepend_bos: bool = False,
    sessions: Sequence[Sequence[int] | np.ndarray] | None = None,
) -> PromptBatch:
    """Left-padded prompt batch (CPU) from per-user histories of ``(item_idx, behavior_idx)`` pairs, oldest first.

    Each event becomes the block ``[behavior, c_0, ..., c_{L-1}]`` (codes only when the vocabulary has no
    behavior tokens) with ``slot`` = position in the block and the event's ``behavior`` / ``level``
    (``behavior_levels[behavior]``, default 0) on every token of the block.  ``max_history`` keeps the most
    recent events.  ``sessions``: per user, the session id of each history event (any non-decreasing ids); the
    prompt's ``session`` is their dense rank within the kept history.  Without them every event is its own
    session, so the session models see a plain causal sequence.  ``prepend_bos`` starts every prompt with
    ``<bos>`` (slot, behavior, level 0); decoder-only models are trained without it, so it is off by default.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != vocab.n_levels:
        raise InputError(f"codes must have shape [n_items, {vocab.n_levels}], got {codes.shape}")
    n_behaviors = max(len(vocab.behaviors), 1)
    levels = np.zeros(n_behaviors, dtype=np.int64) if behavior_levels is None else np.asarray(behavior_levels)
    if levels.shape != (n_behaviors,):
        raise InputError(f"behavior_levels needs one level per behavior ({n_behaviors}), got shape {levels.shape}")

    events, ranks = [], []
    if sessions is not None and len(sessions) != len(histories):
        raise InputError(f"sessions must have one entry per history ({len(histories)}), got {len(sessions)}")
    for u, history in enumerate(histories):
        history = np.asarray(history, dtype=np.int64).reshape(-1, 2)
        ids = np.arange(len(history)) if sessions is None else np.asarray(sessions[u], dtype=np.int64).reshape(-1)
        if len(ids) != len(history):
            raise InputError(f"user {u}: {len(history)} history events but {len(ids)} session ids")
        keep = slice(-max_history, None) if max_history else slice(None)
        history, ids = history[keep], ids[keep]
        events.append(history)
        ranks.append(np.cumsum(np.r_[False, ids[1:] != ids[:-1]]) if len(ids) else ids)
    n_events = np.array([len(h) for h in events], dtype=np.int64)
    flat = np.concatenate(events) if events else np.zeros((0, 2), dtype=np.int64)
    items, behaviors = flat[:, 0], flat[:, 1]
    if len(flat) and (items.min() < 0 or items.max() >= len(codes)):
        raise InputError(f"history item indices must lie in 0..{len(codes) - 1}")
    if len(flat) and (behaviors.min() < 0 or behaviors.max() >= n_behaviors):
        raise InputError(f"history behavior indices must lie in 0..{n_behaviors - 1}")

    # Blocks [E, P] of token ids; metadata per block.
    block = np.asarray(vocab.code_tokens(codes[items]), dtype=np.int64)
    if vocab.use_behavior_token:
        block = np.concatenate([np.asarray(vocab.behavior_token(behaviors), dtype=np.int64)[:, None], block], axis=1)
    p = vocab.block_size
    n_users, extra = len(events), int(prepend_bos)
    lengths = n_events * p + extra
    width = max(int(lengths.max()) if n_users else 0, 1)

    out = {name: np.zeros((n_users, width), dtype=np.int64) for name in FIELDS}
    # Column of each event's first token: rows are right-aligned (left padding).
    user = np.repeat(np.arange(n_users), n_events)
    rank = np.arange(len(flat)) - np.repeat(np.cumsum(n_events) - n_events, n_events)
    start = (width - lengths)[user] + extra + rank * p
    cols = start[:, None] + np.arange(p)[None, :]
    rows = np.broadcast_to(user[:, None], cols.shape)
    out["input_ids"][rows, cols] = block
    out["attention_mask"][rows, cols] = 1
    out["slot"][rows, cols] = np.arange(p)[None, :]
    out["behavior"][rows, cols] = behaviors[:, None]
    out["level"][rows, cols] = levels[behaviors][:, None]
    out["session"][rows, cols] = (np.concatenate(ranks) if ranks else np.zeros(0, np.int64))[:, None]
    if prepend_bos:
        bos_col = width - lengths
        out["input_ids"][np.arange(n_users), bos_col] = BOS
        out["attention_mask"][np.arange(n_users), bos_col] = 1
    return PromptBatch(*(torch.from_numpy(out[name]) for name in FIELDS))
