"""Validated events -> integer sequences with sessions, behaviors and fixed splits
(docs/design.md#preprocessed-tables, docs/design.md#sessions-and-splits).

All steps are whole-table polars expressions (no per-user Python):
dedup -> iterated k-core -> dense ids -> ordering (time, then behavior level)
-> sessions (given or by time gap) -> per-user integer lists + split points.

Split points are positions into each user's sequence, stored once for both protocols:
- ``last_event``: valid = n-2, test = n-1 (users with >= 3 events, else -1);
- ``last_session``: valid / test = first position of the second-to-last / last session
  (users with >= ``min_sessions`` sessions, else -1).  Training data is everything before
  ``valid``; the history of a session target is everything before that session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from seqrec_pipeline.dataset_spec import FilterSpec
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.schemas import ITEMS, SEQUENCES, USERS, check_contract

log = logging.getLogger(__name__)

@dataclass
class Primary:
    sequences: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    behaviors: pl.DataFrame
    stats: dict = field(default_factory=dict)


def sorted_id_codes(ids: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Strings -> int32 codes whose order is the ids' order (numeric ids numerically).

    Hashing (dictionary encoding) does the per-row work; only the unique ids are sorted.
    """
    encoded = pc.dictionary_encode(ids.rechunk().to_arrow())
    names = pl.Series(encoded.dictionary)
    numeric = names.cast(pl.Int64, strict=False)
    order = (np.argsort(numeric.to_numpy(), kind="stable") if numeric.null_count() == 0
             else names.arg_sort().to_numpy())
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank[encoded.indices.to_numpy(zero_copy_only=False)], names.gather(order)


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
    """Per-user integer lists + split points from a frame sorted by user (lists share its buffers)."""
    user = frame["user_idx"].to_numpy()
    lengths = np.bincount(user)
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
        "user_idx": np.arange(len(lengths), dtype=np.int32),
        "item": lists("item_idx", np.int32), "behavior": lists("behavior_idx", np.int8),
        "timestamp": lists("timestamp", np.int64), "session": lists("session", np.int32),
        "n_events": lengths.astype(np.int32), "n_sessions": n_sessions.astype(np.int32),
        "last_event_valid": np.where(has_events, lengths - 2, -1).astype(np.int32),
        "last_event_test": np.where(has_events, lengths - 1, -1).astype(np.int32),
        "last_session_valid": valid.astype(np.int32), "last_session_test": test.astype(np.int32),
    })


def build_primary(
    events: pl.DataFrame, levels: dict[str, int], filters: FilterSpec, session_gap_minutes: float,
    item_text: pl.DataFrame | None = None,
) -> Primary:
    """Validated events -> sequences, dense id maps, behavior table and statistics."""
    behavior_table = pl.DataFrame(
        {
            "behavior_idx": pl.Series(range(len(levels)), dtype=pl.Int8),
            "behavior": list(levels),
            "level": pl.Series(list(levels.values()), dtype=pl.Int8),
        }
    )
    top = max(levels.values())
    behavior_table = behavior_table.with_columns((pl.col("level") == top).alias("is_target"))
    n_in = events.height
    user_codes, user_names = sorted_id_codes(events["user_id"])
    item_codes, item_names = sorted_id_codes(events["item_id"])
    behavior_idx = {b: i for i, b in enumerate(levels)}
    columns = {
        "user_idx": user_codes, "item_idx": item_codes,
        "behavior_idx": events["behavior"].replace_strict(behavior_idx, return_dtype=pl.Int8).to_numpy(),
        "level": events["behavior"].replace_strict(levels, return_dtype=pl.Int8).to_numpy(),
        "timestamp": events["timestamp"].to_numpy(), "source_row": events["source_row"].to_numpy(),
    }
    given_sessions = events["session_id"].null_count() == 0
    if given_sessions:
        columns["session_id"] = events["session_id"]
    # Memory: sort through one permutation, gathering column by column, instead of sorting a whole copy.
    # After this order exact duplicates are adjacent and the first kept is the earliest in the file.
    sort_keys = ["user_idx", "timestamp", "level", "behavior_idx", "item_idx", "source_row"]
    order = pl.DataFrame({k: columns[k] for k in sort_keys}).select(pl.arg_sort_by(sort_keys)).to_series()
    order = order.to_numpy()
    for name in list(columns):
        columns[name] = columns[name].gather(order) if isinstance(columns[name], pl.Series) else columns[name][order]
    del order
    same = np.ones(n_in, dtype=bool)
    for name in ("user_idx", "item_idx", "behavior_idx", "timestamp"):
        same[1:] &= columns[name][1:] == columns[name][:-1]
    same[0] = False
    unique = ~same
    n_dedup = int(unique.sum())
    u, i = columns["user_idx"], columns["item_idx"]
    keep, iterations = k_core(u, i, filters.min_user_events, filters.min_item_events, keep=unique)
    if not keep.any():
        raise InputError(
            f"no events left after the k-core filter (min_user_events={filters.min_user_events}, "
            f"min_item_events={filters.min_item_events}) on {n_dedup} events. Lower the thresholds "
            "under `filters:` in the dataset declaration."
        )
    used_users = np.bincount(u[keep], minlength=len(user_names)) > 0
    used_items = np.bincount(i[keep], minlength=len(item_names)) > 0
    columns["user_idx"], columns["item_idx"] = compact(u[keep], used_users), compact(i[keep], used_items)
    del u, i
    for name in ("behavior_idx", "level", "timestamp", "source_row", "session_id"):
        if name in columns:
            columns[name] = columns[name].filter(pl.Series(keep)) if name == "session_id" else columns[name][keep]
    frame = pl.DataFrame(columns)
    del columns
    users = pl.DataFrame({"user_idx": np.arange(used_users.sum(), dtype=np.int32),
                          "user_id": user_names.filter(pl.Series(used_users))})
    items = pl.DataFrame({"item_idx": np.arange(used_items.sum(), dtype=np.int32),
                          "item_id": item_names.filter(pl.Series(used_items))})
    frame = sessionize(frame, session_gap_minutes * 60.0)
    sequences = _sequences(frame, filters.min_sessions)
    item_counts = np.bincount(frame["item_idx"].to_numpy(), minlength=items.height).astype(np.int32)
    behavior_counts = np.bincount(frame["behavior_idx"].to_numpy(), minlength=len(levels))
    items = items.with_columns(pl.Series("n_events", item_counts))
    if item_text is not None and item_text.width > 1:
        text = item_text.unique("item_id", keep="first")
        items = items.join(text, on="item_id", how="left")
    behavior_table = behavior_table.with_columns(pl.Series("n_events", behavior_counts.astype(np.int64)))

    stats = {
        "n_events_valid": n_in,
        "n_duplicates": n_in - n_dedup,
        "n_filtered_kcore": n_dedup - frame.height,
        "kcore_iterations": iterations,
        "n_users": users.height,
        "n_items": items.height,
        "n_events": frame.height,
        "n_sessions": int(sequences["n_sessions"].sum()),
        "users_last_event": int((sequences["last_event_test"] >= 0).sum()),
        "users_last_session": int((sequences["last_session_test"] >= 0).sum()),
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
        users=check_contract(USERS, users),
        behaviors=behavior_table,
        stats=stats,
    )
