"""Training / validation samples of the generative models as integer arrays
(docs/design.md#training-samples, docs/design.md#token-layout).

Nothing here builds token strings.  A sample set is a flat **event** buffer (item, behavior, session per
event) plus, per sample, two windows into that buffer: the *context* (history) and the *target* events.
Tokens are made only when a batch is collated, by gathering rows of a precomputed ``item -> code tokens``
table, so the stored data is one int per event instead of one per token (``block_size`` x smaller).

Sample modes (``mode``):

- ``user`` (the ``*_decoder`` tasks, GAMER's default): one sequence per user, the last ``max_history + 1``
  events of the training prefix (a history of at most ``max_history`` events plus the final event, as in
  the reference's ``inters`` + ``item``), with loss on **every** code token.
- ``windows``: like ``user`` but the whole training prefix is cut into consecutive windows of
  ``max_history + 1`` events (newest window first), so long histories are not thrown away; not in the
  reference, which keeps only the last window.
- ``event``: one sample per training event ``i >= 1`` of a sequence: target = event ``i``, history = the
  last ``max_history`` events before it (``last_event``) or before the start of its session
  (``last_session``; targets in the first session then have an empty history, kept as in the
  reference); loss on the target codes only.

Validation (:func:`validation_samples`): one sample per validation target event (positions ``[valid,
test)``); its history is the last ``max_history`` events before ``valid``, which is "everything before the
target" for ``last_event`` (one target) and "everything before the target's session" for
``last_session``; loss on the target codes only.  Training samples only ever see positions ``< valid``;
validation samples only positions ``< test``: test events are never loaded by this module.

Users outside the protocol (split point −1) are left out unless ``users="all"``; so are users without a training event
(``valid == 0``) from the training samples.

Generative augmentation (``augment = A``, docs/design.md#augmentation): per training sequence, A extra copies for
``r = k/A, k = 1..A``; in copy k each behavior b that is not a target behavior loses
``floor(n_b * r / (level_b + 1))`` of its events (``n_b`` = its count in that user's training prefix),
chosen uniformly without replacement; target-behavior events are never dropped; copies with fewer than 2
events are discarded.  Thinning happens on the whole training prefix, before truncation to
``max_history``.  The draw is vectorized (one sort per copy, no per-user loop) and seeded by
``numpy.random.default_rng((seed, epoch, 1))``:

- ``augment_mode="static"`` (the reference): drawn once with ``epoch = 0`` and reused every epoch;
- ``augment_mode="per_epoch"``: re-drawn at every ``SampleDataset.set_epoch(epoch)`` (epochs are
  1-based in the trainer), so each epoch sees fresh thinned copies at no extra memory.
  The number of samples may change slightly between epochs (copies below 2 events are discarded).

Batches (:class:`TokenCollator`), all int64 and right-padded:

- decoder-only (``qwen3``, ``gamer``): ``input_ids, attention_mask, slot, behavior, level, labels, session``
  of shape ``[B, S]``; ``S = block_size * (events of the longest sample)``.  An event block is
  ``[behavior_token, c_0 .. c_{L-1}]`` (codes only without behavior tokens); ``slot`` = position in the
  block, ``behavior`` / ``level`` = the block's; ``labels`` = token ids with −100 on behavior tokens, pads
  and (outside ``user`` mode) on history codes; ``session`` = 0-based rank of the event's session inside
  the sample (dense: consecutive distinct sessions get consecutive ranks).  Pads are 0 everywhere except
  ``labels``.  No BOS/EOS (as the reference decoders).  With an item head (``item_labels=True``) also
  ``item_labels``: the event's item index on its first code token where that code carries loss, −100 elsewhere.
- encoder-decoder (``tiger``, ``tiger_mb``, ``mbgen``): the encoder side (``input_ids, attention_mask, slot,
  behavior, level, session``, ``[B, S_enc]``, from the history only; at least one pad block when every history
  is empty) plus ``decoder_input_ids``, ``decoder_behavior`` and ``labels`` of shape ``[B, block_size + 1]``:
  target = ``[behavior, c_0 .. c_{L-1}, eos]``, ``labels`` = target with −100 on the behavior token (not with
  ``behavior_loss``), ``decoder_input_ids`` = ``[bos] + target[:-1]`` (``shift_targets_right``),
  ``decoder_behavior`` = the target's behavior index on every decoder position.  In ``user`` mode the last event
  of the window is the target and the others its history.  No EOS is appended to the encoder input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from seqrec_pipeline.splits import (
    BehaviorTable,
    Users,
    EventBuffer,
    check_protocol,
    training_prefix,
    validation_prefix,
)
from seqrec_pipeline.vocab import BOS, EOS, N_SPECIAL, PAD, TokenVocab

IGNORE_INDEX = -100  # = models.generative.IGNORE_INDEX; not imported, so data code never loads transformers
MODES = ("user", "windows", "event")
AUGMENT_MODES = ("static", "per_epoch")

Mode = Literal["user", "windows", "event"]
AugmentMode = Literal["static", "per_epoch"]

# Distinct random streams derived from the same (seed, epoch): data order and augmentation draws must not
# be correlated, and changing one must not shift the other.
SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1


# ----------------------------------------------------------------------------------------------------------
# Event buffers and sample sets
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSet:
    """Samples as windows into an event buffer: context ``[context_start, context_stop)`` then target
    ``[target_start, target_stop)`` (flat event positions).  ``loss_on_context``: codes of the context
    events carry loss too (``user`` mode)."""

    events: EventBuffer
    context_start: np.ndarray  # int64 [n_samples]
    context_stop: np.ndarray
    target_start: np.ndarray
    target_stop: np.ndarray
    user: np.ndarray  # int32 [n_samples]
    loss_on_context: bool
    no_loss: np.ndarray | None = None  # bool [n_events of ``events``]: events whose codes never carry loss

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_events(self) -> np.ndarray:
        """Events per sample (context + target)."""
        return (self.context_stop - self.context_start) + (self.target_stop - self.target_start)


# ----------------------------------------------------------------------------------------------------------
# From the `sequences` table
# ----------------------------------------------------------------------------------------------------------


def augment_copies(
    events: EventBuffer, level: np.ndarray, is_target: np.ndarray, augment: int, rng: np.random.Generator
) -> EventBuffer:
    """The ``augment`` thinned copies of every sequence (the originals not included), see the module doc.

    Vectorized per copy: give every event a random key, sort events by (sequence, behavior, key) and drop
    the first ``n_drop`` of each group, which is a uniform draw without replacement within the group.
    """
    if augment <= 0 or len(events.item) == 0:
        return events.select(np.zeros(len(events.item), bool)).drop_short(2)
    if (level < 0).any():
        raise ValueError("behavior levels must be >= 0 for the r/(level+1) augmentation rule")
    n_behaviors = len(level)
    seq = events.sequence_of_event()
    beh = events.behavior.astype(np.int64)
    group = seq * n_behaviors + beh  # (sequence, behavior) group of each event
    group_size = np.bincount(group, minlength=events.n_sequences * n_behaviors)
    droppable = ~is_target[beh]
    copies = []
    for k in range(1, augment + 1):
        # floor(n_b * (k/A) / (level_b + 1)) in integer arithmetic (exact, no float rounding at the edges)
        n_drop = np.where(droppable, group_size[group] * k // (augment * (level[beh] + 1)), 0)
        order = np.lexsort((rng.random(len(group)), group))
        sorted_group = group[order]
        first = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order)) - start
        copies.append(events.select(rank >= n_drop).drop_short(2))
    return EventBuffer.concat(copies)


def window_samples(events: EventBuffer, protocol: str, mode: str, max_history: int) -> SampleSet:
    """Sample windows over every sequence of ``events`` (see the module doc for the modes)."""
    if mode not in MODES:
        raise ValueError(f"unknown sample mode {mode!r}; choose one of {list(MODES)}")
    check_protocol(protocol)
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    lengths = events.lengths
    if mode == "user":
        has = lengths >= 1
        stop = events.offsets[1:][has]
        start = np.maximum(events.offsets[:-1][has], stop - (max_history + 1))
        return SampleSet(events, start, stop - 1, stop - 1, stop, events.user[has], loss_on_context=True)
    if mode == "windows":
        width = max_history + 1
        n_windows = -(-lengths // width)  # ceil; 0 for empty sequences
        seq = np.repeat(np.arange(len(lengths)), n_windows)
        k = np.arange(len(seq)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
        stop = events.offsets[1:][seq] - k * width
        start = np.maximum(events.offsets[:-1][seq], stop - width)
        return SampleSet(events, start, stop - 1, stop - 1, stop, events.user[seq], loss_on_context=True)
    seq = events.sequence_of_event()
    target = np.flatnonzero(events.position_in_sequence() >= 1)
    start, stop = events.history_windows(protocol, max_history)
    return SampleSet(events, start[target], stop[target], target, target + 1, events.user[seq[target]],
                     loss_on_context=False)  # fmt: skip


def training_samples(
    sequences: pl.DataFrame,
    behaviors: pl.DataFrame,
    *,
    protocol: str,
    mode: Mode = "user",
    max_history: int = 50,
    augment: int = 0,
    seed: int = 42,
    epoch: int = 0,
    users: Users = "protocol",
    loss_on_repeats: bool = True,
) -> SampleSet:
    """Training samples (positions ``< valid`` only; with ``users="all"`` also every event of the users outside
    the protocol) with ``augment`` thinned copies drawn for ``epoch``.  ``loss_on_repeats=False``: repeat targets
    (:meth:`EventBuffer.repeats`) stay in the context but carry no loss, so the model learns to explore."""
    events = training_prefix(sequences, protocol, users=users).drop_short(1)
    if augment:
        table = BehaviorTable.from_table(behaviors)
        level, is_target = table.levels, table.is_target
        rng = np.random.default_rng((seed, epoch, AUGMENT_STREAM))
        events = EventBuffer.concat([events, augment_copies(events, level, is_target, augment, rng)])
    samples = window_samples(events, protocol, mode, max_history)
    if loss_on_repeats:
        return samples
    return dataclasses.replace(samples, no_loss=events.repeats(protocol))


def validation_samples(sequences: pl.DataFrame, *, protocol: str, max_history: int = 50) -> SampleSet:
    """One sample per validation target (positions ``[valid, test)``), history = last ``max_history``
    events before ``valid``; loss on the target only."""
    events, valid = validation_prefix(sequences, protocol)
    n_targets = events.lengths - valid
    sample_seq = np.repeat(np.arange(events.n_sequences), n_targets)
    context_stop = events.offsets[:-1][sample_seq] + valid[sample_seq]
    context_start = np.maximum(events.offsets[:-1][sample_seq], context_stop - max_history)
    # target j of a user runs over its n_targets positions from `valid` on
    rank = np.arange(len(sample_seq)) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets)
    target = context_stop + rank
    return SampleSet(events, context_start, context_stop, target, target + 1, events.user[sample_seq],
                     loss_on_context=False)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Collation: windows -> padded int64 token batches
# ----------------------------------------------------------------------------------------------------------


class TokenCollator:
    """Turns sample indices into padded int64 batches (keys and shapes in the module doc).

    ``codes``: the SID table ``[n_items, L]``; ``levels``: behavior level per behavior_idx.
    Everything is a gather over ``[B, E]`` index matrices: no per-sample or per-event Python.
    """

    def __init__(self, codes: np.ndarray, vocab: TokenVocab, levels: np.ndarray, encoder_decoder: bool = False,
                 behavior_loss: bool = False, item_labels: bool = False):
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != vocab.n_levels:
            raise ValueError(f"codes must be [n_items, {vocab.n_levels}] for this vocabulary, got {codes.shape}")
        if codes.size and ((codes < 0).any() or (codes >= np.asarray(vocab.level_sizes)).any()):
            raise ValueError("codes out of range of the vocabulary's level sizes")
        if vocab.use_behavior_token and len(vocab.behaviors) != len(levels):
            raise ValueError(f"vocabulary has {len(vocab.behaviors)} behaviors, the behavior table {len(levels)}")
        self.vocab = vocab
        self.code_tokens = vocab.code_tokens(codes.astype(np.int64))  # [n_items, L] token ids
        self.levels = np.asarray(levels, dtype=np.int64)
        self.encoder_decoder = encoder_decoder
        self.behavior_loss = behavior_loss and vocab.use_behavior_token  # tiger_mb: the target's behavior token too
        if item_labels and encoder_decoder:
            raise ValueError("item labels (an item head) exist for decoder-only models only")
        self.item_labels = item_labels  # decoder-only models with an item head: the item at each block's first code

    @property
    def block_size(self) -> int:
        return self.vocab.block_size

    def __call__(self, samples: SampleSet, index: np.ndarray) -> dict[str, torch.Tensor]:
        index = np.asarray(index, dtype=np.int64)
        if self.encoder_decoder:
            return self._encoder_decoder(samples, index)
        return self._decoder_only(samples, index)

    # -- helpers --------------------------------------------------------------------------------------------

    def _blocks(
        self, events: EventBuffer, flat: np.ndarray, valid: np.ndarray, loss: np.ndarray, min_events: int = 0
    ) -> dict[str, np.ndarray]:
        """Event matrices [B, E] (flat positions, real-event mask, loss mask) -> token-level [B, E*P]."""
        batch, n_events = flat.shape
        if n_events < min_events:  # e.g. every tiger history empty: keep one pad block
            pad = min_events - n_events
            flat, valid, loss = (np.pad(a, ((0, 0), (0, pad))) for a in (flat, valid, loss))
            n_events = min_events
        item = events.item[flat]
        behavior = np.where(valid, events.behavior[flat].astype(np.int64), 0)
        code_ids = self.code_tokens[item]  # [B, E, L]
        code_labels = np.where(loss[..., None], code_ids, IGNORE_INDEX)
        if self.vocab.use_behavior_token:
            behavior_ids = (N_SPECIAL + behavior)[..., None]
            ids = np.concatenate([behavior_ids, code_ids], axis=-1)
            labels = np.concatenate([np.full_like(behavior_ids, IGNORE_INDEX), code_labels], axis=-1)
        else:
            ids, labels = code_ids, code_labels
        size = self.block_size
        real = np.broadcast_to(valid[..., None], (batch, n_events, size))
        session = events.session[flat]
        new_session = np.ones_like(valid)
        new_session[:, 1:] = session[:, 1:] != session[:, :-1]
        session_rank = np.where(valid, np.cumsum(new_session, axis=1) - 1, 0)

        def per_token(a: np.ndarray) -> np.ndarray:
            return np.broadcast_to(a[..., None], (batch, n_events, size)).reshape(batch, -1)

        slot = np.broadcast_to(np.arange(size), (batch, n_events, size))
        out = {
            "input_ids": np.where(real, ids, PAD).reshape(batch, -1),
            "attention_mask": real.reshape(batch, -1),
            "slot": np.where(real, slot, 0).reshape(batch, -1),
            "behavior": per_token(behavior),
            "level": per_token(np.where(valid, self.levels[behavior], 0)),
            "labels": np.where(real, labels, IGNORE_INDEX).reshape(batch, -1),
            "session": per_token(session_rank),
        }
        if self.item_labels:
            first_code = slot == int(self.vocab.use_behavior_token)
            wanted = (valid & loss)[..., None] & first_code
            out["item_labels"] = np.where(wanted, item[..., None], IGNORE_INDEX).reshape(batch, -1)
        return out

    @staticmethod
    def _windows(starts: list[np.ndarray], stops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate per-sample windows into a right-padded [B, E] matrix of flat positions.

        Returns (flat position, real mask, index of the window each column came from)."""
        lengths = [stop - start for start, stop in zip(starts, stops, strict=True)]
        total = sum(lengths)
        n_events = int(total.max(initial=0))
        column = np.arange(n_events)[None, :]
        flat = np.zeros((len(total), n_events), dtype=np.int64)
        part = np.full((len(total), n_events), -1, dtype=np.int64)
        before = np.zeros(len(total), dtype=np.int64)
        for k, (start, length) in enumerate(zip(starts, lengths, strict=True)):  # 1-2 windows, not per sample
            inside = (column >= before[:, None]) & (column < (before + length)[:, None])
            flat = np.where(inside, start[:, None] + column - before[:, None], flat)
            part = np.where(inside, k, part)
            before = before + length
        return flat, part >= 0, part

    def _decoder_only(self, samples: SampleSet, index: np.ndarray) -> dict[str, torch.Tensor]:
        flat, valid, part = self._windows(
            [samples.context_start[index], samples.target_start[index]],
            [samples.context_stop[index], samples.target_stop[index]],
        )
        loss = valid if samples.loss_on_context else part == 1
        if samples.no_loss is not None:
            loss = loss & ~samples.no_loss[flat]
        return _to_torch(self._blocks(samples.events, flat, valid, loss))

    def _encoder_decoder(self, samples: SampleSet, index: np.ndarray) -> dict[str, torch.Tensor]:
        n_targets = samples.target_stop[index] - samples.target_start[index]
        if (n_targets != 1).any():
            raise ValueError("encoder-decoder batches need exactly one target event per sample")
        flat, valid, _ = self._windows([samples.context_start[index]], [samples.context_stop[index]])
        encoder = self._blocks(samples.events, flat, valid, np.zeros_like(valid), min_events=1)
        del encoder["labels"]
        target_loss = np.ones((len(index), 1), bool)
        if samples.no_loss is not None:
            target_loss = ~samples.no_loss[samples.target_start[index]][:, None]
        target = self._blocks(
            samples.events, samples.target_start[index][:, None], np.ones((len(index), 1), bool), target_loss,
        )  # fmt: skip
        if self.behavior_loss:
            target["labels"][:, 0] = np.where(target_loss[:, 0], target["input_ids"][:, 0], IGNORE_INDEX)
        eos = np.full((len(index), 1), EOS)
        target_ids = np.concatenate([target["input_ids"], eos], axis=1)
        decoder_input_ids = np.concatenate([np.full((len(index), 1), BOS), target_ids[:, :-1]], axis=1)
        # the target block's behavior on every decoder position (<bos> included; mbgen's decoder injection)
        decoder_behavior = np.repeat(target["behavior"][:, :1], decoder_input_ids.shape[1], axis=1)
        return _to_torch({
            **encoder,
            "decoder_input_ids": decoder_input_ids,
            "decoder_behavior": decoder_behavior,
            "labels": np.concatenate([target["labels"], eos], axis=1),
        })  # fmt: skip


def _to_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.int64)) for key, value in arrays.items()}


# ----------------------------------------------------------------------------------------------------------
# torch Dataset + sampler
# ----------------------------------------------------------------------------------------------------------


class SampleDataset(Dataset):
    """A torch ``Dataset`` over a sample set; batches are built in one vectorized call (``__getitems__``).

    ``samples`` is a :class:`SampleSet`, or a function ``epoch -> SampleSet`` for samples that change per
    epoch (``augment_mode="per_epoch"``); :meth:`set_epoch` (called by the trainer before each epoch)
    rebuilds them.  Use it with ``DataLoader(..., collate_fn=identity_collate)``.
    """

    def __init__(self, samples: SampleSet | Callable[[int], SampleSet], collator: TokenCollator):
        self.collator = collator
        self._builder = None if isinstance(samples, SampleSet) else samples
        self.epoch = 0
        self.samples: SampleSet = samples if self._builder is None else self._builder(0)

    @property
    def per_epoch(self) -> bool:
        return self._builder is not None

    def set_epoch(self, epoch: int) -> None:
        if self._builder is not None and epoch != self.epoch:
            self.samples = self._builder(epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One sample, unpadded, as 1-D tensors."""
        return {key: value[0] for key, value in self.collator(self.samples, np.array([i])).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.collator(self.samples, np.asarray(indices))


def identity_collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for :class:`SampleDataset` (its ``__getitems__`` already returns a padded batch)."""
    return batch


class EpochSampler(torch.utils.data.Sampler[int]):
    """Seeded, sort-free order; sharded over ranks; padded to whole optimizer steps.

    The order of epoch ``e`` is ``default_rng((seed, e, 0)).permutation(n)`` (identity when ``shuffle`` is
    False): it depends only on (seed, epoch), so a resumed run sees exactly the batches of an uninterrupted
    one.  ``pad_to``: the epoch's index list is extended cyclically to a multiple of ``pad_to`` (= global
    batch: micro batch x accumulation x ranks) so every epoch ends on an optimizer-step boundary with full
    micro-batches (the way ``DistributedSampler`` pads); rank ``r`` then takes every ``world_size``-th index.
    Without padding (evaluation), shards are as even as possible and never duplicate a sample.
    """

    def __init__(self, dataset: Dataset, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 pad_to: int = 1):  # fmt: skip
        self.dataset, self.seed, self.shuffle = dataset, seed, shuffle
        self.rank, self.world_size, self.pad_to = rank, world_size, max(1, pad_to)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch, SHUFFLE_STREAM)).permutation(n)
        else:
            order = np.arange(n)
        if self.pad_to > 1 and n:
            order = np.resize(order, -(-n // self.pad_to) * self.pad_to)
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "shuffle": self.shuffle, "pad_to": self.pad_to}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


# ----------------------------------------------------------------------------------------------------------
# One-call constructors
# ----------------------------------------------------------------------------------------------------------


def make_collator(
    codes: np.ndarray, vocab: TokenVocab, behaviors: pl.DataFrame, *, encoder_decoder: bool = False,
    behavior_loss: bool = False, item_labels: bool = False,
) -> TokenCollator:
    return TokenCollator(codes, vocab, BehaviorTable.from_table(behaviors).levels, encoder_decoder=encoder_decoder,
                         behavior_loss=behavior_loss, item_labels=item_labels)


def make_datasets(
    sequences: pl.DataFrame,
    behaviors: pl.DataFrame,
    codes: np.ndarray,
    vocab: TokenVocab,
    *,
    protocol: str,
    mode: Mode | Literal["auto"] = "user",
    max_history: int = 50,
    augment: int = 0,
    augment_mode: AugmentMode = "static",
    seed: int = 42,
    encoder_decoder: bool = False,
    behavior_loss: bool = False,
    users: Users = "protocol",
    loss_on_repeats: bool = True,
    item_labels: bool = False,
) -> tuple[SampleDataset, SampleDataset]:
    """(train, valid) datasets for a model (``encoder_decoder=True`` for ``tiger`` / ``tiger_mb``;
    ``behavior_loss=True`` for ``tiger_mb``, whose target behavior token carries loss; ``item_labels=True`` for a
    decoder with an item head).

    ``mode="auto"``: ``windows`` for decoder-only models (every code of every event carries loss) and
    ``event`` for encoder-decoders, whose sample has a single target (windows would give them one target
    per 51 events).
    """
    if mode == "auto":
        mode = "event" if encoder_decoder else "windows"
    if augment_mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augment_mode {augment_mode!r}; choose one of {list(AUGMENT_MODES)}")
    if augment < 0:
        raise ValueError(f"augment must be >= 0, got {augment}")
    collator = make_collator(codes, vocab, behaviors, encoder_decoder=encoder_decoder, behavior_loss=behavior_loss,
                             item_labels=item_labels)

    def build(epoch: int) -> SampleSet:
        return training_samples(sequences, behaviors, protocol=protocol, mode=mode, max_history=max_history,
                                augment=augment, seed=seed, epoch=epoch, users=users,
                                loss_on_repeats=loss_on_repeats)  # fmt: skip

    per_epoch = augment > 0 and augment_mode == "per_epoch"
    train = SampleDataset(build if per_epoch else build(0), collator)
    valid = SampleDataset(validation_samples(sequences, protocol=protocol, max_history=max_history), collator)
    return train, valid


__all__ = [
    "AUGMENT_MODES",
    "IGNORE_INDEX",
    "MODES",
    "EpochSampler",
    "SampleDataset",
    "SampleSet",
    "TokenCollator",
    "augment_copies",
    "identity_collate",
    "make_collator",
    "make_datasets",
    "training_samples",
    "validation_samples",
    "window_samples",
]
