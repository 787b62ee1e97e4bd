"""Common interface of the discriminative baselines (docs/design.md#discriminative-baselines).

Tensor conventions (every model, every method)
----------------------------------------------
- ``items``      int64 [B, S]: dense item index + 1; 0 = padding.
- ``behaviors``  int64 [B, S]: behavior index + 1; 0 = padding (optional for single-behavior models).
- Canonical layout is **right-aligned** (left-padded): the most recent event is in the last column.
  Models re-align every row internally (``layers.right_align``), so left, right or mixed padding all
  give identical outputs; rows longer than ``max_len`` keep their ``max_len`` most recent events.
  An all-padding row (empty history) is allowed and gives a finite, history-free prediction.
- Per-sample targets are *plain* dense indices (no +1 shift, no padding value):
  ``target_item`` [B] in ``0..n_items-1`` (the logits column), ``target_behavior`` [B] in
  ``0..n_behaviors-1``. ``target_behavior=None`` means ``model.default_target_behavior``.
- ``score`` returns logits [B, n_items] over the FULL catalog; column i is dense item i. Padding
  and the internal [MASK] token have no column, so they can never be recommended.

Training batches for ``loss`` are dicts with keys ``items``, ``behaviors`` (optional),
``target_item``, ``target_behavior`` (optional) and, for BPR, optionally ``negative_item`` [B]
(otherwise one negative per sample is drawn uniformly from the catalog minus the target).
Extra keys (levels, sessions, ...) are ignored.

Two training regimes exist:
- next-item models (SASRec, GRU4Rec): the representation of the history predicts ``target_item``;
- cloze models (BERT4Rec, MBHT, MB-STR, PBAT): the target is appended to the history with its
  behavior, some positions are replaced by [MASK] (always the target, plus random history events),
  and the masked items are predicted. At inference a [MASK] carrying the requested target behavior
  is appended, so behavior-aware cloze models answer "which item will be <behavior>-ed next".

The ``<name>_behavior`` variants of SASRec, BERT4Rec and GRU4Rec (:func:`behavior_variant`) add a behavior
embedding to every event's item embedding; the next-item ones also embed the behavior of the event each position
predicts (the requested ``target_behavior`` after the last event), the cloze one reads it on the [MASK].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import BehaviorEmbedding, next_behaviors, right_align

LOSS_TYPES = ("ce", "bpr")


class SequentialRecommender(nn.Module):
    """Base class: input handling, full-catalog scoring and the CE / BPR losses."""

    name: ClassVar[str] = "base"
    #: True when the scores depend on ``target_behavior``.
    behavior_aware: ClassVar[bool] = False
    #: True when :meth:`sequence_loss` trains on event windows: causal next-item models whose
    #: ``encode(items) -> [B, S, H]`` predicts every position at once (the SASRec / GRU4Rec papers'
    #: training) and every cloze model (masked positions of the window).
    supports_sequence_loss: ClassVar[bool] = False
    #: True for the ``<name>_behavior`` variants (:func:`behavior_variant`): every event's input vector is its
    #: item embedding plus a behavior embedding (:meth:`embed_events`).
    embeds_behaviors: ClassVar[bool] = False

    def __init__(
        self,
        n_items: int,
        n_behaviors: int,
        max_len: int,
        *,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__()
        if n_items < 2:
            raise ValueError(f"n_items must be >= 2, got {n_items}")
        if n_behaviors < 1:
            raise ValueError(f"n_behaviors must be >= 1, got {n_behaviors}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if default_target_behavior is None:
            default_target_behavior = n_behaviors - 1
        if not 0 <= default_target_behavior < n_behaviors:
            raise ValueError(
                f"default_target_behavior {default_target_behavior} outside 0..{n_behaviors - 1}"
            )
        self.n_items = n_items
        self.n_behaviors = n_behaviors
        self.max_len = max_len
        self.default_target_behavior = default_target_behavior
        self.loss_type = loss_type
        #: Full constructor arguments, filled in by ``build_discriminative`` (for checkpoints).
        self.config: dict = {}
        self.behavior_input = None

    # ------------------------------------------------------------------ subclass API
    item_embedding: nn.Embedding  # rows: 0 = padding, 1..n_items = items (+ [MASK] for cloze models)
    behavior_input: BehaviorEmbedding | None  # set by the models from make_behavior_input

    def make_behavior_input(self, dim: int) -> BehaviorEmbedding | None:
        """The behavior inputs of a ``_behavior`` variant (None otherwise); next-item models also embed the
        behavior of the event they predict."""
        if not self.embeds_behaviors:
            return None
        return BehaviorEmbedding(self.n_behaviors, dim, query=not isinstance(self, ClozeRecommender))

    def embed_events(self, items: Tensor, behaviors: Tensor | None = None, query: Tensor | None = None) -> Tensor:
        """Input vectors [B, S, D] of events: the item embedding, plus :class:`~.layers.BehaviorEmbedding` of
        ``behaviors`` (and of the predicted events' ``query`` behaviors) for the ``_behavior`` variants."""
        x = self.item_embedding(items)
        if self.behavior_input is None:
            return x
        if behaviors is None:
            raise ValueError(f"{self.name} embeds behaviors: pass the behaviors of the events")
        return x + self.behavior_input(behaviors, query)

    @property
    def repr_dim(self) -> int:
        """Width of the vector returned by ``forward``."""
        return self.item_embedding.embedding_dim

    def encode(self, items: Tensor, behaviors: Tensor | None = None, query: Tensor | None = None) -> Tensor:
        """Next-item models: right-aligned events [B, S] -> hidden states [B, S, D], position t depending on the
        events <= t only (and, for ``_behavior`` variants, on ``query[:, t]``, the behavior of the event t predicts)."""
        raise NotImplementedError

    def forward(
        self,
        items: Tensor,
        behaviors: Tensor | None = None,
        target_behavior: Tensor | None = None,
        levels: Tensor | None = None,
    ) -> Tensor:
        """Sequence representation [B, repr_dim]: for next-item models the state at the last event, which (in the
        ``_behavior`` variants) reads the requested ``target_behavior``. ``levels`` is accepted and ignored."""
        items, behaviors = self.prepare(items, behaviors)
        target_behavior = self.resolve_target_behavior(target_behavior, items)
        return self.encode(items, behaviors, next_behaviors(behaviors, target_behavior))[:, -1]

    def head(self, rep: Tensor, target_behavior: Tensor) -> Tensor:
        """Representations [M, repr_dim] -> logits [M, n_items]. Default: dot product with the
        (shared) item embeddings, skipping the padding row and any [MASK] row."""
        return rep @ self.item_embedding.weight[1 : self.n_items + 1].T

    # ------------------------------------------------------------------ public API
    def score(
        self,
        items: Tensor,
        behaviors: Tensor | None = None,
        target_behavior: Tensor | None = None,
        levels: Tensor | None = None,
    ) -> Tensor:
        """Logits [B, n_items] over the full catalog (column i = dense item i)."""
        target_behavior = self.resolve_target_behavior(target_behavior, items)
        return self.head(self(items, behaviors, target_behavior), target_behavior)

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Training loss of one batch (see module docstring for the keys; ``sequence_items`` -> :meth:`sequence_loss`)."""
        if "sequence_items" in batch:
            return self.sequence_loss(batch["sequence_items"], batch.get("sequence_behaviors"))
        target_behavior = self.resolve_target_behavior(batch.get("target_behavior"), batch["items"])
        logits = self.score(batch["items"], batch.get("behaviors"), target_behavior)
        return self.ranking_loss(logits, batch["target_item"], batch.get("negative_item"))

    def sequence_loss(self, windows: Tensor, behaviors: Tensor | None = None) -> Tensor:
        """Next-item loss at every position of right-aligned event windows ``[B, W + 1]`` (item + 1, 0 = pad):
        inputs ``windows[:, :-1]``, targets ``windows[:, 1:]``; one forward gives W training targets. ``behaviors``
        (same layout) feed the ``_behavior`` variants: each position reads its target's behavior, as at ranking."""
        if not self.supports_sequence_loss:
            raise NotImplementedError(f"{self.name} is not trained per position; use rec.sample_mode=event")
        windows = windows.long()
        behaviors = (windows != 0).long() if behaviors is None else behaviors.long()
        # right-aligned windows stay aligned with their targets
        inputs, input_behaviors = self.prepare(windows[:, :-1], behaviors[:, :-1])
        S = inputs.shape[1]
        targets, target_behaviors = windows[:, -S:], behaviors[:, -S:]
        keep = inputs != 0  # a real input's next event is real too (rows are right-aligned)
        hidden = self.encode(inputs, input_behaviors, target_behaviors)[keep]
        return self.ranking_loss(self.head(hidden, target_behaviors[keep] - 1), targets[keep] - 1)

    # ------------------------------------------------------------------ helpers
    def prepare(self, items: Tensor, behaviors: Tensor | None, length: int | None = None) -> tuple[Tensor, Tensor]:
        """Right-align, keep the ``length`` (default ``max_len``) most recent events, default behaviors to index 0."""
        if items.dim() != 2:
            raise ValueError(f"items must be [B, S], got shape {tuple(items.shape)}")
        if behaviors is None:
            behaviors = (items != 0).long()
        elif behaviors.shape != items.shape:
            raise ValueError(f"behaviors {tuple(behaviors.shape)} != items {tuple(items.shape)}")
        items, behaviors = right_align(items.long(), behaviors.long())
        length = length or self.max_len
        return items[:, -length:], behaviors[:, -length:]

    def resolve_target_behavior(self, target_behavior: Tensor | int | None, items: Tensor) -> Tensor:
        """-> int64 [B] of 0-based behavior indices (``None`` -> ``default_target_behavior``)."""
        B = items.size(0)
        if target_behavior is None:
            target_behavior = self.default_target_behavior
        if isinstance(target_behavior, int):
            return torch.full((B,), target_behavior, dtype=torch.long, device=items.device)
        return target_behavior.long().reshape(B).to(items.device)

    def ranking_loss(self, logits: Tensor, labels: Tensor, negatives: Tensor | None = None) -> Tensor:
        """Full-catalog cross-entropy, or BPR against one negative per row."""
        labels = labels.long()
        if self.loss_type == "ce":
            return F.cross_entropy(logits, labels)
        if negatives is None:
            negatives = sample_negatives(labels, self.n_items)
        pos = logits.gather(1, labels[:, None])
        neg = logits.gather(1, negatives.long().reshape(-1, 1))
        return -F.logsigmoid(pos - neg).mean()


class ClozeRecommender(SequentialRecommender):
    """Masked-item (cloze) training with an appended target, BERT4Rec style.

    Subclasses implement ``encode(seq_items, seq_behaviors) -> [B, S', D]`` on right-aligned
    sequences that may contain ``mask_token``; ``head`` maps rows of it to catalog logits.
    Two sample layouts train the same cloze objective: one history + appended target per event
    (:meth:`loss`), or a window of consecutive events whose newest event plays the target
    (:meth:`sequence_loss`, BERT4Rec's own training: one forward trains ~``mask_ratio`` of the window).
    """

    supports_sequence_loss = True

    def __init__(
        self,
        n_items: int,
        n_behaviors: int,
        max_len: int,
        *,
        mask_ratio: float,
        ft_ratio: float,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        if not 0.0 <= mask_ratio <= 1.0 or not 0.0 <= ft_ratio <= 1.0:
            raise ValueError(f"mask_ratio and ft_ratio must be in [0, 1], got {mask_ratio}, {ft_ratio}")
        self.mask_ratio = mask_ratio
        self.ft_ratio = ft_ratio

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def encode(self, seq_items: Tensor, seq_behaviors: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, items, behaviors=None, target_behavior=None, levels=None) -> Tensor:
        items, behaviors = self.prepare(items, behaviors)
        target_behavior = self.resolve_target_behavior(target_behavior, items)
        mask = torch.full_like(items[:, :1], self.mask_token)
        seq_items = torch.cat([items, mask], dim=1)
        seq_behaviors = torch.cat([behaviors, target_behavior[:, None] + 1], dim=1)
        return self.encode(seq_items, seq_behaviors)[:, -1]

    def loss(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        if "sequence_items" in batch:
            return self.sequence_loss(batch["sequence_items"], batch.get("sequence_behaviors"), generator)
        seq_items, seq_behaviors = self.append_target(batch)
        mask = self.sample_mask(seq_items, generator)
        logits, labels = self.masked_logits(seq_items, seq_behaviors, mask)
        negatives = None
        if self.loss_type == "bpr" and "negative_item" in batch:
            # A given negative belongs to the target (last column); masked history events keep a
            # uniform one.
            negatives = sample_negatives(labels, self.n_items)
            is_target = torch.zeros_like(mask)
            is_target[:, -1] = True
            negatives[is_target[mask]] = batch["negative_item"].long().to(labels.device)
        return self.ranking_loss(logits, labels, negatives)

    def sequence_loss(self, windows: Tensor, behaviors: Tensor | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """Cloze loss on right-aligned event windows ``[B, W + 1]`` (item / behavior index + 1, 0 = pad;
        the ``max_len + 1`` newest events are kept): the newest event is masked like an appended target,
        history events with probability ``mask_ratio`` (not in ``ft_ratio`` rows), each keeping its behavior."""
        seq_items, seq_behaviors = self.prepare(windows, behaviors, length=self.max_len + 1)
        mask = self.sample_mask(seq_items, generator)
        logits, labels = self.masked_logits(seq_items, seq_behaviors, mask)
        return self.ranking_loss(logits, labels)

    def append_target(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """History (right-aligned, <= max_len) followed by the target event: [B, S'+1]."""
        items, behaviors = self.prepare(batch["items"], batch.get("behaviors"))
        target_behavior = self.resolve_target_behavior(batch.get("target_behavior"), items)
        target_item = batch["target_item"].long().reshape(-1, 1).to(items.device)
        seq_items = torch.cat([items, target_item + 1], dim=1)
        seq_behaviors = torch.cat([behaviors, target_behavior[:, None] + 1], dim=1)
        return seq_items, seq_behaviors

    def sample_mask(self, seq_items: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Boolean [B, S] of positions to predict.

        The appended target (last column) is always masked, so every sample trains the task we
        evaluate. A share ``ft_ratio`` of the rows masks only the target (BERT4Rec's fine-tuning
        rows); the other rows also mask each history event with probability ``mask_ratio``.
        """
        B, S = seq_items.shape
        rand = torch.rand(B, S, device=seq_items.device, generator=generator)
        ft_rows = torch.rand(B, 1, device=seq_items.device, generator=generator) < self.ft_ratio
        mask = (rand < self.mask_ratio) & (seq_items != 0) & ~ft_rows
        mask[:, -1] = True
        return mask

    def masked_logits(self, seq_items: Tensor, seq_behaviors: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Replace masked positions by [MASK] (keeping their behavior), encode, and return the
        logits [M, n_items] of the masked positions with their labels [M] (dense item indices)."""
        inputs = seq_items.masked_fill(mask, self.mask_token)
        hidden = self.encode(inputs, seq_behaviors)
        logits = self.head(hidden[mask], seq_behaviors[mask] - 1)
        return logits, seq_items[mask] - 1


def behavior_variant(cls: type[SequentialRecommender]) -> type[SequentialRecommender]:
    """``<name>_behavior``: ``cls`` with behavior inputs, the "+behavior" baselines
    (:meth:`SequentialRecommender.embed_events`).

    Same constructor and sizes; the requested behavior reaches the model like in the multi-behavior models
    (cloze: on the appended [MASK]; next-item: as the behavior of the predicted event), so it is behavior aware.
    """
    return type(f"{cls.__name__}Behavior", (cls,), {
        "name": f"{cls.name}_behavior", "embeds_behaviors": True, "behavior_aware": True,
        "__doc__": f"{cls.__name__} whose events embed item + behavior (see ``behavior_variant``).",
        "__module__": cls.__module__,
    })


def sample_negatives(labels: Tensor, n_items: int) -> Tensor:
    """One uniform negative per label, never equal to it: (label + U{1..n-1}) mod n."""
    offset = torch.randint(1, n_items, labels.shape, device=labels.device)
    return (labels + offset) % n_items


def topk_items(logits: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-k (scores, dense item indices) per row of ``logits`` [B, n_items], best first.

    ``exclude`` is either a bool mask [B, n_items] or an int tensor [B, L] of dense item indices
    where negative entries are ignored (so a history ``items`` tensor can be passed as
    ``items - 1``). Excluded items get score -inf; they appear only when k exceeds what is left.
    ``k`` is capped at the catalog size. Batched ``torch.topk``: chunk B for huge catalogs.
    """
    n = logits.size(-1)
    if exclude is not None:
        if exclude.dtype == torch.bool:
            banned = exclude
        else:
            # Column 0 of the scratch tensor swallows the ignored (negative) entries.
            scratch = torch.zeros(logits.size(0), n + 1, dtype=torch.bool, device=logits.device)
            idx = (exclude.long() + 1).clamp(min=0)
            scratch.scatter_(1, idx, True)
            banned = scratch[:, 1:]
        logits = logits.masked_fill(banned, float("-inf"))
    return torch.topk(logits, min(k, n), dim=-1)
