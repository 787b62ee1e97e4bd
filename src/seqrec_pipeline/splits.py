"""The split protocols and every rule that reads them: behavior table, training prefixes, history windows,
evaluation sets.  Nothing else in the project reads the stored split points.

``preprocess`` stores, per user of ``sequences``, positions into the user's time-ordered event list:
``<protocol>_valid`` and ``<protocol>_test`` (-1 = the user is outside that protocol).  The rules, written
once here (``docs/design.md#sessions-and-splits``):

- **protocol users**: ``test >= 0``.  ``last_event`` needs 3 events (valid = n-2, test = n-1);
  ``last_session`` needs ``min_sessions`` sessions (valid / test = first position of the second-to-last /
  last session).
- **target window** of a split: ``valid`` = positions ``[valid, test)``, ``test`` = ``[test, n_events)``.
- **training prefix** of a protocol user: positions ``< valid``.  Users outside the protocol have no targets,
  so all their events may serve as training data: ``users="all"`` adds them (rules, item embeddings),
  ``users="protocol"`` leaves them out.
- **history** of a target event at position p: the events before p (``last_event``) or before the first
  event of p's session (``last_session``), at most ``max_history`` of them, the most recent kept.  An
  evaluation sample's history is everything before its window, which is the same rule (the window is one
  event or one session).  Evaluation histories are never empty (a protocol user has at least one event
  before ``valid``); training targets with an empty history (the first event, or the first session) are
  kept or dropped by the caller through ``min_history``.
- **repeat target**: a target item that occurs anywhere in the user's events before the target window
  (the whole history, not only the ``max_history`` window a model sees); the other targets are
  **explore** targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import polars as pl

from seqrec_pipeline.errors import InputError

PROTOCOLS = ("last_event", "last_session")
SPLITS = ("valid", "test")

Users = Literal["protocol", "all"]


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown split.protocol '{protocol}'; choose one of {list(PROTOCOLS)}")
    return protocol


def split_columns(protocol: str) -> tuple[str, str]:
    check_protocol(protocol)
    return f"{protocol}_valid", f"{protocol}_test"


def protocol_users(sequences: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """The rows of ``sequences`` whose users take part in ``protocol``."""
    return sequences.filter(pl.col(split_columns(protocol)[1]) >= 0)


# ----------------------------------------------------------------------------------------------------------
# Behaviors
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BehaviorTable:
    """The ``behaviors`` table of ``preprocess`` indexed by behavior_idx: names, levels and the target."""

    names: tuple[str, ...]
    levels: np.ndarray  # int64 [n_behaviors]; higher = stronger intent
    is_target: np.ndarray  # bool [n_behaviors]; exactly one True

    @classmethod
    def from_table(cls, behaviors: pl.DataFrame) -> BehaviorTable:
        table = behaviors.sort("behavior_idx")
        if not np.array_equal(table["behavior_idx"].to_numpy(), np.arange(table.height)):
            raise ValueError("behavior_idx must be 0..B-1")
        levels = table["level"].to_numpy().astype(np.int64)
        is_target = (table["is_target"].to_numpy().astype(bool) if "is_target" in table.columns
                     else levels == levels.max())
        return cls(tuple(table["behavior"].to_list()), levels, is_target)

    @property
    def target(self) -> int:
        """behavior_idx of the target behavior (the top level)."""
        return int(np.flatnonzero(self.is_target)[0])

    def __len__(self) -> int:
        return len(self.names)


# ----------------------------------------------------------------------------------------------------------
# Flat events and training prefixes
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventBuffer:
    """Sequences of events stored flat: sequence ``s`` is ``[offsets[s], offsets[s+1])``."""

    item: np.ndarray  # int32 [n_events]
    behavior: np.ndarray  # int8 [n_events]
    session: np.ndarray  # int32 [n_events], non-decreasing within a sequence
    offsets: np.ndarray  # int64 [n_sequences + 1]
    user: np.ndarray  # int32 [n_sequences], user_idx each sequence comes from

    @property
    def n_sequences(self) -> int:
        return len(self.user)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence_of_event(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_sequences, dtype=np.int64), self.lengths)

    def consecutive_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(item, next item) int64 of every two consecutive events of one sequence."""
        same = self.sequence_of_event()
        follows = np.flatnonzero(same[1:] == same[:-1])
        return self.item[follows].astype(np.int64), self.item[follows + 1].astype(np.int64)

    def position_in_sequence(self) -> np.ndarray:
        return np.arange(len(self.item), dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths)

    def select(self, keep: np.ndarray) -> EventBuffer:
        """Keep a subset of events (a boolean mask over events); empty sequences stay, with length 0."""
        counts = np.bincount(self.sequence_of_event()[keep], minlength=self.n_sequences)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return EventBuffer(self.item[keep], self.behavior[keep], self.session[keep], offsets, self.user)

    def drop_short(self, min_events: int) -> EventBuffer:
        long_enough = self.lengths >= min_events
        if long_enough.all():
            return self
        buffer = self.select(np.repeat(long_enough, self.lengths))
        offsets = np.concatenate([[0], np.cumsum(buffer.lengths[long_enough])]).astype(np.int64)
        return EventBuffer(buffer.item, buffer.behavior, buffer.session, offsets, self.user[long_enough])

    @staticmethod
    def concat(buffers: Sequence[EventBuffer]) -> EventBuffer:
        shifts = np.cumsum([0] + [len(b.item) for b in buffers[:-1]])
        offsets = np.concatenate([[0]] + [b.offsets[1:] + s for b, s in zip(buffers, shifts, strict=True)])
        return EventBuffer(
            np.concatenate([b.item for b in buffers]),
            np.concatenate([b.behavior for b in buffers]),
            np.concatenate([b.session for b in buffers]),
            offsets.astype(np.int64),
            np.concatenate([b.user for b in buffers]),
        )

    def repeats(self, protocol: str) -> np.ndarray:
        """Per event, whether it is a repeat target under ``protocol``: its item occurs in the same sequence
        before the event's history stop (the event itself for ``last_event``, its session's first event for
        ``last_session``), the rule :func:`eval_set` applies to evaluation targets."""
        _, stop = self.history_windows(protocol, max_history=1)
        sequence = self.sequence_of_event()
        width = np.int64(int(self.item.max(initial=0)) + 1)
        _, group = np.unique(sequence * width + self.item, return_inverse=True)
        first = np.full(int(group.max(initial=-1)) + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, group, np.arange(len(self.item), dtype=np.int64))
        return first[group] < stop

    def history_windows(self, protocol: str, max_history: int) -> tuple[np.ndarray, np.ndarray]:
        """Per event, the flat ``[start, stop)`` of its history: it stops at the event itself
        (``last_event``) or at the first event of its session (``last_session``) and keeps at most
        ``max_history`` events of the same sequence."""
        check_protocol(protocol)
        position = np.arange(len(self.item), dtype=np.int64)
        if protocol == "last_event":
            stop = position
        else:
            new = np.ones(len(self.item), dtype=bool)
            new[1:] = self.session[1:] != self.session[:-1]
            new[self.offsets[:-1][self.lengths > 0]] = True  # a sequence start always starts a session
            stop = np.maximum.accumulate(np.where(new, position, 0))
        start = np.maximum(np.repeat(self.offsets[:-1], self.lengths), stop - max_history)
        return start, stop


def _flat(users: pl.DataFrame, cut: np.ndarray) -> EventBuffer:
    """The first ``cut[u]`` events of every row of ``users`` as one flat buffer."""
    lengths = users["n_events"].to_numpy().astype(np.int64)
    cut = np.asarray(cut, dtype=np.int64)
    if users.is_empty():
        empty = np.zeros(0, dtype=np.int64)
        return EventBuffer(empty.astype(np.int32), empty.astype(np.int8), empty.astype(np.int32),
                           np.zeros(1, np.int64), empty.astype(np.int32))  # fmt: skip
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(lengths.sum()) - np.repeat(starts, lengths)
    keep = position < np.repeat(cut, lengths)
    flat = users.select(pl.col("item").explode(), pl.col("behavior").explode(), pl.col("session").explode())
    return EventBuffer(
        flat["item"].to_numpy()[keep].astype(np.int32),
        flat["behavior"].to_numpy()[keep].astype(np.int8),
        flat["session"].to_numpy()[keep].astype(np.int32),
        np.concatenate([[0], np.cumsum(cut)]).astype(np.int64),
        users["user_idx"].to_numpy().astype(np.int32),
    )


def training_lengths(sequences: pl.DataFrame, protocols: Sequence[str]) -> np.ndarray:
    """Per row of ``sequences``, how many leading events are training data under every protocol given
    (a user outside a protocol contributes all its events to that protocol's training data)."""
    cuts = [pl.when(pl.col(c) >= 0).then(pl.col(c)).otherwise(pl.col("n_events"))
            for c in (split_columns(p)[0] for p in protocols)]
    return sequences.select(pl.min_horizontal(cuts)).to_series().to_numpy().astype(np.int64)


def training_prefix(sequences: pl.DataFrame, protocol: str, *, users: Users = "protocol") -> EventBuffer:
    """The training events (positions before ``valid``) of the protocol users, plus every event of the
    other users with ``users="all"``, one sequence per user in table order."""
    if users == "all":
        return _flat(sequences, training_lengths(sequences, [protocol]))
    if users != "protocol":
        raise ValueError(f"users must be 'protocol' or 'all', got {users!r}")
    members = protocol_users(sequences, protocol)
    return _flat(members, _checked_points(members, protocol)[0])


def events_before(sequences: pl.DataFrame, protocol: str, split: str | None) -> EventBuffer:
    """What a statistic of the log may count when ranking ``split``'s windows: every event before each protocol
    user's ``split`` window (``"valid"``: the training prefix) plus every event of the other users; ``None``:
    every event (recommendations for the next visit).  One sequence per row of ``sequences``."""
    if split is None:
        return _flat(sequences, sequences["n_events"].to_numpy())
    if split == "valid":
        return training_prefix(sequences, protocol, users="all")
    if split != "test":
        raise ValueError(f"split must be 'valid', 'test' or None, got {split!r}")
    test = split_columns(protocol)[1]
    cut = sequences.select(pl.when(pl.col(test) >= 0).then(pl.col(test)).otherwise(pl.col("n_events")))
    return _flat(sequences, cut.to_series().to_numpy())


def _checked_points(members: pl.DataFrame, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    valid_col, test_col = split_columns(protocol)
    valid = members[valid_col].to_numpy().astype(np.int64)
    test = members[test_col].to_numpy().astype(np.int64)
    if (valid < 0).any() or (test > members["n_events"].to_numpy()).any() or (test <= valid).any():
        raise ValueError(f"inconsistent {protocol} split points (need 0 <= valid < test <= n_events)")
    return valid, test


def validation_prefix(sequences: pl.DataFrame, protocol: str) -> tuple[EventBuffer, np.ndarray]:
    """The protocol users' events before ``test`` and each user's ``valid`` point (where the validation
    targets start in its sequence)."""
    members = protocol_users(sequences, protocol)
    valid, test = _checked_points(members, protocol)
    return _flat(members, test), valid


# ----------------------------------------------------------------------------------------------------------
# Evaluation sets
# ----------------------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Users with a target window, their histories, and one sample per (user, behavior present).

    Histories are flat: user ``u``'s window of at most ``max_history`` events (oldest first) is
    ``history_item[history_offsets[u]:history_offsets[u + 1]]`` (what a model sees).  The ``past_*`` arrays
    hold all of the user's events before the window (``past_offsets``), with their time and session, and
    ``window_time`` the time of the window's first event: what repeat-aware rankers and the repeat rule use.
    ``repeat`` marks, per sample and target, whether the target item occurs anywhere in the user's past.
    Times are the events' timestamps (seconds), or their positions when the table has none.
    """

    user_idx: np.ndarray  # [n_users]
    history_item: np.ndarray  # int64 [n_history_events]
    history_behavior: np.ndarray  # int64 [n_history_events]
    history_offsets: np.ndarray  # int64 [n_users + 1]
    sample_user: np.ndarray  # [n_samples] row into user_idx
    sample_behavior: np.ndarray  # [n_samples]
    targets: list[list[int]]  # [n_samples] distinct target items
    repeat: list[list[bool]]  # [n_samples] per target: the item is in the user's whole history
    past_item: np.ndarray  # int64 [n_past_events], every event before each user's window
    past_behavior: np.ndarray  # int64 [n_past_events]
    past_time: np.ndarray  # int64 [n_past_events]
    past_session: np.ndarray  # int64 [n_past_events]
    past_offsets: np.ndarray  # int64 [n_users + 1]
    window_time: np.ndarray  # int64 [n_users]
    history_session: np.ndarray | None = None  # int64 [n_history_events], session id of each history event

    @property
    def n_users(self) -> int:
        return len(self.user_idx)

    @property
    def n_samples(self) -> int:
        return len(self.sample_user)

    @property
    def last_history_item(self) -> np.ndarray:
        """Per user the newest item of its history window (-1 for an empty window)."""
        ends = self.history_offsets[1:]
        return np.where(self.history_lengths > 0, self.history_item[np.maximum(ends - 1, 0)], -1)

    @cached_property
    def histories(self) -> list[np.ndarray]:
        """Per user ``[h, 2]`` (item_idx, behavior_idx), oldest first."""
        pairs = np.stack([self.history_item, self.history_behavior], 1)
        return np.split(pairs, self.history_offsets[1:-1])

    @cached_property
    def history_sessions(self) -> list[np.ndarray] | None:
        """Per user the session id of each history event (what the session models read), or None."""
        if self.history_session is None:
            return None
        return np.split(self.history_session, self.history_offsets[1:-1])

    @property
    def history_lengths(self) -> np.ndarray:
        return np.diff(self.history_offsets)

    def behavior_mask(self, n_behaviors: int) -> np.ndarray:
        mask = np.zeros((self.n_users, n_behaviors), dtype=bool)
        mask[self.sample_user, self.sample_behavior] = True
        return mask

    def in_past(self, items: np.ndarray) -> np.ndarray:
        """``items [n_samples, K]`` -> whether each item occurs in its sample's user's past (-1 never does)."""
        items = np.asarray(items, dtype=np.int64)
        width = np.int64(max(int(self.past_item.max(initial=0)), int(items.max(initial=0))) + 1)
        past_user = np.repeat(np.arange(self.n_users), np.diff(self.past_offsets))
        keys = np.unique(past_user * width + self.past_item)
        found = np.isin(self.sample_user[:, None] * width + items, keys)
        return found & (items >= 0)


def seen_before(start: pl.Expr, user: str = "row") -> pl.Expr:
    """The repeat rule on exploded events (columns ``user``, ``item``, ``pos``): whether the item occurs in
    the user's events before position ``start``."""
    return pl.col("pos").min().over(user, "item") < start


def _exploded(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """One row per event of ``frame``'s lists with ``row`` (the frame's row) and ``pos`` (the event's position
    in it); without timestamps or sessions, positions stand in for both."""
    extra = [c for c in ("timestamp", "session") if c in frame.columns]
    events = (frame.select(*columns, "item", "behavior", *extra, pl.int_range(pl.len()).alias("row"))
              .explode("item", "behavior", *extra)
              .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("row").alias("pos")))
    return events.with_columns(pl.col("pos").alias(c) for c in ("timestamp", "session") if c not in extra)


def _assemble(user_idx: np.ndarray, past: pl.DataFrame, history: pl.DataFrame, window_time: np.ndarray,
              sample_user: np.ndarray, sample_behavior: np.ndarray, targets: list, repeat: list) -> EvalSet:
    """The EvalSet of per-event frames (``past`` and ``history`` in row order) and per-sample arrays."""

    def offsets(rows: pl.Series) -> np.ndarray:
        counts = np.bincount(rows.to_numpy(), minlength=len(user_idx))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def ints(frame: pl.DataFrame, column: str) -> np.ndarray:
        return frame[column].to_numpy().astype(np.int64)

    return EvalSet(
        user_idx=user_idx,
        history_item=ints(history, "item"),
        history_behavior=ints(history, "behavior"),
        history_offsets=offsets(history["row"]),
        sample_user=np.asarray(sample_user, dtype=np.int64),
        sample_behavior=np.asarray(sample_behavior, dtype=np.int64),
        targets=targets,
        repeat=repeat,
        past_item=ints(past, "item"),
        past_behavior=ints(past, "behavior"),
        past_time=ints(past, "timestamp"),
        past_session=ints(past, "session"),
        past_offsets=offsets(past["row"]),
        window_time=np.asarray(window_time, dtype=np.int64),
        history_session=ints(history, "session"),
    )


def validation_users(users: pl.DataFrame, max_users: int | None) -> pl.DataFrame:
    """At most ``max_users`` rows of the protocol ``users`` (None: all): the rows whose ``user_idx`` has the
    lowest value of a fixed integer hash (splitmix64), so every node, model and training rank that ranks the
    validation session reads the same users, whatever the table's row order, and a larger cap keeps them."""
    if max_users is None or users.height <= max_users:
        return users
    key = users["user_idx"].to_numpy().astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    key = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    key = (key ^ (key >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    key ^= key >> np.uint64(31)
    return users[np.sort(np.argsort(key, kind="stable")[:max_users])]


def eval_set(sequences: pl.DataFrame, protocol: str, split: str, max_history: int,
             behaviors: list[int] | None = None, max_users: int | None = None) -> EvalSet:
    """Targets and histories of ``split`` ('valid' or 'test') under ``protocol``; ``behaviors`` keeps only
    the samples of those behaviors; ``max_users`` ranks the validation session of at most this many users
    (:func:`validation_users`; the test session is always every protocol user's)."""
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; choose one of {list(SPLITS)}")
    if max_users is not None and split != "valid":
        raise ValueError("max_users samples the validation session only")
    valid_col, test_col = split_columns(protocol)
    users = protocol_users(sequences, protocol)
    if split == "valid":
        users = validation_users(users, max_users)
    start = users[valid_col] if split == "valid" else users[test_col]
    end = users[test_col] if split == "valid" else users["n_events"]
    window = _exploded(users.with_columns(start.alias("_start"), end.alias("_end")), "_start", "_end")
    in_target = (pl.col("pos") >= pl.col("_start")) & (pl.col("pos") < pl.col("_end"))
    target = window.with_columns(seen_before(pl.col("_start")).alias("repeat")).filter(in_target)
    if behaviors is not None:
        target = target.filter(pl.col("behavior").is_in(behaviors))
    samples = (target.group_by("row", "behavior", maintain_order=True)
               .agg(pl.col("item", "repeat").filter(pl.col("item").is_first_distinct()))
               .sort("row", "behavior"))
    past = window.filter(pl.col("pos") < pl.col("_start"))
    history = past.filter(pl.col("pos") >= pl.col("_start") - max_history)
    window_time = window.filter(pl.col("pos") == pl.col("_start")).sort("row")["timestamp"].to_numpy()
    return _assemble(users["user_idx"].to_numpy(), past, history, window_time, samples["row"].to_numpy(),
                     samples["behavior"].to_numpy(), samples["item"].to_list(), samples["repeat"].to_list())


def latest_set(sequences: pl.DataFrame, max_history: int, behaviors: Sequence[int]) -> EvalSet:
    """What a recommendation for the next visit reads: every row's whole log is its past (the window starts
    after its last event), the last ``max_history`` events are its history, and there is one sample per
    (row, behavior in ``behaviors``), without targets.  ``window_time`` is the time of the row's last event
    (the repeat scorer measures ages from there), so a log's recommendations do not depend on when they are
    computed.  Rows need at least one event (``sequences`` columns: user_idx, item, behavior and optionally
    timestamp, session)."""
    if sequences.height and int(sequences.select(pl.col("item").list.len().min()).item()) < 1:
        raise InputError("every history needs at least one event")
    past = _exploded(sequences).with_columns(pl.len().over("row").cast(pl.Int64).alias("_n"))
    history = past.filter(pl.col("pos") >= pl.col("_n") - max_history)
    window_time = past.group_by("row").agg(pl.col("timestamp").max()).sort("row")["timestamp"].to_numpy()
    behaviors = np.asarray(behaviors, dtype=np.int64)
    n, n_samples = sequences.height, sequences.height * len(behaviors)
    return _assemble(sequences["user_idx"].to_numpy(), past, history, window_time,
                     np.repeat(np.arange(n), len(behaviors)), np.tile(behaviors, n),
                     [[] for _ in range(n_samples)], [[] for _ in range(n_samples)])
