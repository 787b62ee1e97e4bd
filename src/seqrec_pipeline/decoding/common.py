"""Pieces shared by the beam search and the exact scorer: modes, argument resolution, result types."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel

from ..errors import InputError
from ..models.generative.factory import model_name_of
from ..vocab import TokenVocab
from .prompts import PromptBatch

MODES = ("fixed_behavior", "behavior_item", "single")


@dataclass
class RankedItems:
    """Ranked lists of one behavior: ``items`` / ``scores`` ``[n_users, K]`` (-1 / -inf where fewer than K
    exist or the behavior was not decoded for that user), ``evaluated [n_users]`` bool."""

    items: torch.Tensor
    scores: torch.Tensor
    evaluated: torch.Tensor


@dataclass
class DecodeResult:
    """What a decoder returns (CPU tensors).

    - ``by_behavior``: behavior index -> :class:`RankedItems`.  Fixed-behavior mode: one entry per requested
      behavior; single mode: ``{0: ...}``; behavior-item mode: empty (the behavior is part of each entry).
    - ``items`` / ``scores`` / ``behaviors`` ``[n_users, K]``: the one ranked list per user, ranked by score
      (summed log-probabilities).  ``behaviors`` is the behavior each entry was decoded under (generated in
      behavior-item mode), -1 on empty entries.  In fixed-behavior mode they are set only when a single
      behavior was requested (otherwise None: use ``by_behavior``).  In behavior-item mode an entry is a
      (behavior, item) pair, so an item may appear once per behavior.
    """

    mode: str
    by_behavior: dict[int, RankedItems] = field(default_factory=dict)
    items: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    behaviors: torch.Tensor | None = None

    @property
    def predicted_behavior(self) -> torch.Tensor | None:
        """Behavior of the best entry per user ([n_users], -1 if none); for next-behavior accuracy."""
        return None if self.behaviors is None else self.behaviors[:, 0]


def check_mode(mode: str, vocab: TokenVocab) -> None:
    if mode not in MODES:
        raise InputError(f"unknown decoding mode {mode!r}; valid: {', '.join(MODES)}")
    if (mode == "single") == vocab.use_behavior_token:
        need = "has no behavior tokens" if mode == "single" else "has behavior tokens"
        raise InputError(f"mode {mode!r} needs a vocabulary that {need} ({vocab.use_behavior_token=})")


def n_behaviors_of(vocab: TokenVocab) -> int:
    return max(len(vocab.behaviors), 1)


def request_mask(behaviors, n_users: int, n_behaviors: int) -> np.ndarray:
    """Which (user, behavior) pairs to decode in fixed-behavior mode, as a bool array ``[n_users, n_behaviors]``.

    ``behaviors``: None (every behavior for every user), a sequence of behavior indices (those for every
    user), or a bool mask ``[n_users, n_behaviors]`` (e.g. the behaviors present in each user's target session).
    """
    if behaviors is None:
        return np.ones((n_users, n_behaviors), dtype=bool)
    array = np.asarray(behaviors.cpu() if isinstance(behaviors, torch.Tensor) else behaviors)
    if array.dtype == bool:
        if array.shape != (n_users, n_behaviors):
            raise InputError(f"a behavior mask must have shape {(n_users, n_behaviors)}, got {array.shape}")
        return array
    ids = array.astype(np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= n_behaviors):
        raise InputError(f"behavior indices must lie in 0..{n_behaviors - 1}, got {ids.tolist()}")
    mask = np.zeros((n_users, n_behaviors), dtype=bool)
    mask[:, ids] = True
    return mask


def resolve_behavior_levels(
    model: PreTrainedModel, behavior_levels: Sequence[int] | torch.Tensor | np.ndarray | None, n_behaviors: int
) -> torch.Tensor:
    """Level per behavior as a long tensor on the model's device (what ``gamer`` reads for generated tokens)."""
    device = next(model.parameters()).device
    if behavior_levels is None:
        if getattr(model.config, "cross_layers", None) and n_behaviors > 1:
            name = model_name_of(model.config)
            raise InputError(f"{name} needs behavior_levels (one level per behavior) to decode multi-behavior data")
        return torch.zeros(n_behaviors, dtype=torch.long, device=device)
    levels = torch.as_tensor(np.asarray(behavior_levels.cpu() if isinstance(behavior_levels, torch.Tensor)
                                        else behavior_levels), dtype=torch.long)  # fmt: skip
    if levels.shape != (n_behaviors,):
        raise InputError(f"behavior_levels needs one entry per behavior ({n_behaviors}), got {tuple(levels.shape)}")
    return levels.to(device)


def catalog_of_behavior(n_catalogs: int, n_behaviors: int, device: torch.device) -> torch.Tensor:
    """Catalog (trie root) used for each behavior: the shared one, or one per behavior."""
    if n_catalogs == 1:
        return torch.zeros(n_behaviors, dtype=torch.long, device=device)
    if n_catalogs != n_behaviors:
        raise InputError(f"{n_catalogs} catalogs for {n_behaviors} behaviors: give one catalog, or one per behavior")
    return torch.arange(n_behaviors, device=device)


def behavior_allowed_mask(
    allowed_behaviors: Sequence[int] | np.ndarray | None, catalog_sizes: Sequence[int], n_behaviors: int, device
) -> torch.Tensor:
    """Behaviors the model may generate in behavior-item mode: the allowed ones whose catalog is not empty."""
    allowed = np.ones(n_behaviors, dtype=bool)
    if allowed_behaviors is not None:
        allowed[:] = False
        allowed[np.asarray(allowed_behaviors, dtype=np.int64)] = True
    if len(catalog_sizes) == n_behaviors:
        allowed &= np.asarray(catalog_sizes) > 0
    if not allowed.any():
        raise InputError("no behavior may be generated (allowed_behaviors / catalogs leave none)")
    return torch.from_numpy(allowed).to(device)


def check_prompts_nonempty(model: PreTrainedModel, prompts: PromptBatch, mode: str) -> None:
    """Decoder-only models predict the first generated token from the last prompt token: it must exist."""
    if mode == "fixed_behavior" or getattr(model.config, "is_encoder_decoder", False):
        return  # the behavior token / the decoder's <bos> is always there
    empty = (prompts.attention_mask.sum(dim=1) == 0).nonzero().flatten()  # one check before decoding
    if empty.numel():
        raise InputError(
            f"prompts {empty[:10].tolist()} are empty; mode {mode!r} on a decoder-only model needs at least one "
            "history token (build them with prepend_bos=True to decode users without history)"
        )


@contextmanager
def eval_mode(model: PreTrainedModel):
    """Decode without dropout, and leave the model in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def pad_ranked(scores: torch.Tensor, *others_and_fill: tuple[torch.Tensor, int], top_k: int) -> list[torch.Tensor]:
    """Cut or pad ``[Q, k]`` ranked tensors to ``[Q, top_k]`` (scores padded with -inf, the others with a fill)."""
    tensors = [(scores, float("-inf")), *others_and_fill]
    k = scores.shape[1]
    if k >= top_k:
        return [t[:, :top_k] for t, _ in tensors]
    return [torch.cat([t, t.new_full((t.shape[0], top_k - k), fill)], dim=1) for t, fill in tensors]
