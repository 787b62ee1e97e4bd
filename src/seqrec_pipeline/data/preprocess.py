"""Validated events -> integer sequences with sessions, behaviors and fixed splits
(docs/design.md#preprocessed-tables, docs/design.md#sessions-and-splits, docs/design.md#logs-larger-than-memory).

All steps are polars / numpy over whole buckets of users (no per-user Python): dense ids -> per bucket
ordering (time, then behavior level) and dedup -> global iterated k-core -> per bucket sessions (given or
by time gap) -> per-user integer lists + split points.  A log within one bucket is one in-memory bucket.

Split points are positions into each user's sequence, stored once for both protocols:
- ``last_event``: valid = n-2, test = n-1 (users with >= 3 events, else -1);
- ``last_session``: valid / test = first position of the second-to-last / last session
  (users with >= ``min_sessions`` sessions, else -1).  Training data is everything before
  ``valid``; the history of a session target is everything before that session.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from seqrec_pipeline.data.progress import Progress
from seqrec_pipeline.dataset_spec import FilterSpec
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.workdir import spill_folder
from seqrec_pipeline.schemas import ITEMS, SEQUENCES, USERS, check_contract

log = logging.getLogger(__name__)

@dataclass
class Primary:
    sequences: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    behaviors: pl.DataFrame
    stats: dict = field(default_factory=dict)


def ordered_ids(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """A frame of distinct ids sorted into code order: numerically when every id is an integer (ties of equal
    numbers, "7" and "07", by the string), else as strings."""
    numeric = frame[column].cast(pl.Int64, strict=False)
    if numeric.null_count() == 0:
        return frame.with_columns(numeric.alias("_n")).sort("_n", column).drop("_n")
    return frame.sort(column)


def compact(codes: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Renumber codes to 0..K-1 over the used ones, keeping their order."""
    return (np.cumsum(used, dtype=np.int64) - 1).astype(np.int32)[codes]


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int,
           keep: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Keep-mask after dropping users/items below the thresholds until none is left (a fixed point)."""
    keep = np.ones(len(users), dtype=bool) if keep is None else keep.copy()
    n_users, n_items = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    iterations = 0
    while True:
        iterations += 1
        user_ok = np.bincount(users[keep], minlength=n_users) >= min_user
        item_ok = np.bincount(items[keep], minlength=n_items) >= min_item
        new_keep = keep & user_ok[users] & item_ok[items]
        if new_keep.sum() == keep.sum():
            return keep, iterations
        keep = new_keep


def sessionize(frame: pl.DataFrame, gap_seconds: float) -> pl.DataFrame:
    """Session number (0-based) per user of a frame sorted by user then time.

    Given session ids cut wherever the id changes (so sessions are contiguous runs);
    otherwise a new session starts where the gap to the previous event exceeds the limit.
    """
    new_user = pl.col("user_idx") != pl.col("user_idx").shift(1)
    if "session_id" in frame.columns:
        cut = pl.col("session_id") != pl.col("session_id").shift(1)
    else:
        cut = (pl.col("timestamp") - pl.col("timestamp").shift(1)) > gap_seconds
    frame = frame.with_columns((new_user | cut).fill_null(True).cast(pl.Int32).cum_sum().alias("_starts"))
    session = pl.col("_starts") - pl.col("_starts").first().over("user_idx")
    return frame.with_columns(session.cast(pl.Int32).alias("session")).drop("_starts")


def _sequences(frame: pl.DataFrame, min_sessions: int) -> pl.DataFrame:
    """Per-user integer lists + split points from a frame sorted by user whose users are a contiguous run of
    ``user_idx`` (the whole table, or one bucket of it); the lists share the frame's buffers."""
    user = frame["user_idx"].to_numpy()
    first_user = int(user[0])
    lengths = np.bincount(user - first_user)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    starts = offsets[:-1]
    session = frame["session"].to_numpy()
    n_sessions = session[offsets[1:] - 1] + 1
    # flat positions where a session starts; a user's k-th session start is session_starts[cum + k]
    is_start = np.ones(len(session), dtype=bool)
    is_start[1:] = session[1:] != session[:-1]
    is_start[starts] = True
    session_starts = np.flatnonzero(is_start)
    last = np.cumsum(n_sessions) - 1  # index (into session_starts) of each user's last session
    test = np.where(n_sessions >= min_sessions, session_starts[last] - starts, -1)
    valid = np.where(n_sessions >= min_sessions, session_starts[np.maximum(last - 1, 0)] - starts, -1)
    has_events = lengths >= 3

    def lists(column: str, dtype) -> pl.Series:
        values = pa.array(frame[column].to_numpy().astype(dtype, copy=False))
        return pl.Series(pa.LargeListArray.from_arrays(pa.array(offsets), values))

    return pl.DataFrame({
        "user_idx": np.arange(first_user, first_user + len(lengths), dtype=np.int32),
        "item": lists("item_idx", np.int32), "behavior": lists("behavior_idx", np.int8),
        "timestamp": lists("timestamp", np.int64), "session": lists("session", np.int32),
        "n_events": lengths.astype(np.int32), "n_sessions": n_sessions.astype(np.int32),
        "last_event_valid": np.where(has_events, lengths - 2, -1).astype(np.int32),
        "last_event_test": np.where(has_events, lengths - 1, -1).astype(np.int32),
        "last_session_valid": valid.astype(np.int32), "last_session_test": test.astype(np.int32),
    })


class _Buckets:
    """Encoded events by user bucket: in memory for one bucket, else Arrow IPC files in a spill folder
    (written once per input batch and bucket, read back one bucket at a time)."""

    def __init__(self, n: int, folder: Path | None):
        self.n, self.folder = n, folder
        self.memory: dict[int, list[pl.DataFrame]] = {b: [] for b in range(n)}
        self.batches = 0

    def add(self, frame: pl.DataFrame, bucket: np.ndarray) -> None:
        if self.folder is None:
            self.memory[0].append(frame)
            return
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.n + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            part = frame[order[bounds[b]:bounds[b + 1]]]
            part.write_ipc(self.folder / f"b{b:05d}-{self.batches:05d}.arrow")
        self.batches += 1

    def get(self, b: int) -> pl.DataFrame | None:
        if self.folder is None:
            parts, self.memory[b] = self.memory[b], []
        else:
            files = sorted(self.folder.glob(f"b{b:05d}-*.arrow"))
            parts = [pl.read_ipc(f) for f in files]
            for f in files:
                f.unlink()
        return pl.concat(parts) if parts else None

    def put(self, b: int, frame: pl.DataFrame) -> None:
        if self.folder is None:
            self.memory[b] = [frame]
        else:
            frame.write_ipc(self.folder / f"b{b:05d}-sorted.arrow")


def _batches(events: pl.DataFrame | pl.LazyFrame, batch_rows: int):
    if isinstance(events, pl.DataFrame):
        yield from events.iter_slices(batch_rows)
    else:
        yield from events.collect_batches(chunk_size=batch_rows)


def _sort_dedup(frame: pl.DataFrame) -> pl.DataFrame:
    """Sorted by user, time, level, behavior, item, file row; exact duplicates (user, item, behavior, time)
    are then adjacent and the first kept is the earliest in the file."""
    frame = frame.sort(["user_idx", "timestamp", "level", "behavior_idx", "item_idx", "source_row"])
    same = np.ones(frame.height, dtype=bool)
    for name in ("user_idx", "item_idx", "behavior_idx", "timestamp"):
        values = frame[name].to_numpy()
        same[1:] &= values[1:] == values[:-1]
    same[0] = False
    return frame.filter(pl.Series(~same))


def build_primary(
    events: pl.DataFrame | pl.LazyFrame, levels: dict[str, int], filters: FilterSpec, session_gap_minutes: float,
    item_text: pl.DataFrame | None = None, bucket_events: int | None = None, batch_rows: int | None = None,
    work_dir: Path | None = None,
) -> Primary:
    """Validated events -> sequences, dense id maps, behavior table and statistics.

    One code path for every size: the events are read in batches of ``batch_rows`` and encoded to integer
    columns in user buckets of about ``bucket_events`` events (contiguous ranges of sorted user ids).  A log
    within one bucket stays in memory; a larger one is spilled to a folder in ``work_dir`` and each bucket is
    sorted, deduplicated, filtered and sessionized on its own, after a global k-core on two int32 arrays.
    Buckets are whole users in id order, so the tables are the same for any bucket size.
    """
    behavior_table = pl.DataFrame(
        {
            "behavior_idx": pl.Series(range(len(levels)), dtype=pl.Int8),
            "behavior": list(levels),
            "level": pl.Series(list(levels.values()), dtype=pl.Int8),
        }
    )
    top = max(levels.values())
    behavior_table = behavior_table.with_columns((pl.col("level") == top).alias("is_target"))
    lazy = events.lazy()
    # pass 1 (streamed): distinct ids in code order, events per user, whether every event has a session id
    user_counts = ordered_ids(lazy.group_by("user_id").agg(pl.len().alias("n")).collect(engine="streaming"),
                              "user_id")
    item_names = ordered_ids(lazy.select(pl.col("item_id").unique()).collect(engine="streaming"), "item_id")["item_id"]
    user_names = user_counts["user_id"]
    per_user = user_counts["n"].to_numpy().astype(np.int64)
    n_in = int(per_user.sum())
    given_sessions = lazy.select(pl.col("session_id").null_count()).collect(engine="streaming").item() == 0
    bucket_events = bucket_events or max(n_in, 1)
    batch_rows = batch_rows or max(n_in, 1)
    # whole users in id order, a new bucket wherever the events before a user pass a multiple of bucket_events
    _, user_bucket = np.unique((np.cumsum(per_user) - per_user) // bucket_events, return_inverse=True)
    user_bucket = user_bucket.astype(np.int32)
    n_buckets = int(user_bucket[-1]) + 1 if user_bucket.size else 1
    folder = spill_folder(work_dir or Path(tempfile.gettempdir())) if n_buckets > 1 else None
    try:
        return _build(lazy if n_buckets > 1 or isinstance(events, pl.LazyFrame) else events, levels, filters,
                      session_gap_minutes, item_text, behavior_table, user_names, item_names, user_bucket,
                      _Buckets(n_buckets, folder), given_sessions, n_in, batch_rows)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _build(events, levels, filters, session_gap_minutes, item_text, behavior_table, user_names, item_names,
           user_bucket, buckets: _Buckets, given_sessions: bool, n_in: int, batch_rows: int) -> Primary:
    user_map = pl.DataFrame({"user_id": user_names, "user_idx": np.arange(len(user_names), dtype=np.int32)})
    item_map = pl.DataFrame({"item_id": item_names, "item_idx": np.arange(len(item_names), dtype=np.int32)})
    behavior_idx = {b: i for i, b in enumerate(levels)}
    progress = Progress(f"preprocess: encoding into {buckets.n} user bucket(s)", n_in)
    # pass 2 (streamed): integer columns, spilled by bucket
    for batch in _batches(events, batch_rows):
        encoded = (batch.lazy()
                   .join(user_map.lazy(), on="user_id", how="left", maintain_order="left")
                   .join(item_map.lazy(), on="item_id", how="left", maintain_order="left")
                   .select("user_idx", "item_idx",
                           pl.col("behavior").replace_strict(behavior_idx, return_dtype=pl.Int8).alias("behavior_idx"),
                           pl.col("behavior").replace_strict(levels, return_dtype=pl.Int8).alias("level"),
                           "timestamp", "source_row", *(["session_id"] if given_sessions else []))
                   .collect())
        buckets.add(encoded, user_bucket[encoded["user_idx"].to_numpy()])
        progress.add(batch.height)
    # pass 3: per bucket sort + dedup; the (user, item) codes of every kept event for the global k-core
    users, items = [], []
    for b in range(buckets.n):
        frame = buckets.get(b)
        if frame is None:
            users.append(np.empty(0, np.int32))
            items.append(np.empty(0, np.int32))
            continue
        frame = _sort_dedup(frame)
        users.append(frame["user_idx"].to_numpy())
        items.append(frame["item_idx"].to_numpy())
        buckets.put(b, frame)
    sizes = [len(u) for u in users]
    u, i = np.concatenate(users), np.concatenate(items)
    del users, items
    n_dedup = len(u)
    keep, iterations = k_core(u, i, filters.min_user_events, filters.min_item_events)
    if not keep.any():
        raise InputError(
            f"no events left after the k-core filter (min_user_events={filters.min_user_events}, "
            f"min_item_events={filters.min_item_events}) on {n_dedup} events. Lower the thresholds "
            "under `filters:` in the dataset declaration."
        )
    used_users = np.bincount(u[keep], minlength=len(user_names)) > 0
    used_items = np.bincount(i[keep], minlength=len(item_names)) > 0
    del u, i
    # pass 4: per bucket k-core filter, dense ids, sessions, sequences
    parts, item_counts = [], np.zeros(int(used_items.sum()), dtype=np.int64)
    behavior_counts = np.zeros(len(levels), dtype=np.int64)
    progress = Progress(f"preprocess: sessions and splits of {buckets.n} user bucket(s)", n_dedup)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    for b in range(buckets.n):
        frame = buckets.get(b)
        if frame is None:
            continue
        frame = frame.filter(pl.Series(keep[offsets[b]:offsets[b + 1]]))
        progress.add(sizes[b])
        if frame.height == 0:
            continue
        frame = frame.with_columns(pl.Series("user_idx", compact(frame["user_idx"].to_numpy(), used_users)),
                                   pl.Series("item_idx", compact(frame["item_idx"].to_numpy(), used_items)))
        frame = sessionize(frame, session_gap_minutes * 60.0)
        parts.append(_sequences(frame, filters.min_sessions))
        item_counts += np.bincount(frame["item_idx"].to_numpy(), minlength=item_counts.size)
        behavior_counts += np.bincount(frame["behavior_idx"].to_numpy(), minlength=len(levels))
        del frame
    sequences = pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]
    del parts
    users_table = pl.DataFrame({"user_idx": np.arange(used_users.sum(), dtype=np.int32),
                                "user_id": user_names.filter(pl.Series(used_users))})
    items = pl.DataFrame({"item_idx": np.arange(used_items.sum(), dtype=np.int32),
                          "item_id": item_names.filter(pl.Series(used_items)),
                          "n_events": item_counts.astype(np.int32)})
    if item_text is not None and item_text.width > 1:
        text = item_text.unique("item_id", keep="first")
        items = items.join(text, on="item_id", how="left")
    behavior_table = behavior_table.with_columns(pl.Series("n_events", behavior_counts))
    n_events = int(sequences["n_events"].sum())
    stats = {
        "n_events_valid": n_in,
        "n_duplicates": n_in - n_dedup,
        "n_filtered_kcore": n_dedup - n_events,
        "kcore_iterations": iterations,
        "n_users": users_table.height,
        "n_items": items.height,
        "n_events": n_events,
        "n_sessions": int(sequences["n_sessions"].sum()),
        "users_last_event": int((sequences["last_event_test"] >= 0).sum()),
        "users_last_session": int((sequences["last_session_test"] >= 0).sum()),
        "user_buckets": buckets.n,
    }
    log.info(
        "preprocessed: %d events -> %d after dedup (-%d) and %d-iteration k-core (-%d); %d users, %d items, "
        "%d sessions; %d users have >= %d sessions (last_session split)",
        n_in, n_dedup, stats["n_duplicates"], iterations, stats["n_filtered_kcore"], stats["n_users"],
        stats["n_items"], stats["n_sessions"], stats["users_last_session"], filters.min_sessions,
    )
    return Primary(
        sequences=check_contract(SEQUENCES, sequences),
        items=check_contract(ITEMS, items),
        users=check_contract(USERS, users_table),
        behaviors=behavior_table,
        stats=stats,
    )
