"""Validated events -> integer sequences with sessions, behaviors and fixed splits (SPEC §3.3).

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

import polars as pl

from seqrec_pipeline.dataset_spec import FilterSpec
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.schemas import ITEMS, SEQUENCES, USERS, check_contract

log = logging.getLogger(__name__)

PROTOCOLS = ("last_event", "last_session")


@dataclass
class Primary:
    sequences: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    behaviors: pl.DataFrame
    stats: dict = field(default_factory=dict)


def _dense_ids(values: pl.Series, name: str) -> pl.DataFrame:
    """id -> dense index; numeric ids sort numerically so index order matches the data's ids."""
    unique = values.unique()
    numeric = unique.cast(pl.Int64, strict=False)
    order = (
        pl.DataFrame({name: unique, "_n": numeric}).sort("_n", name)
        if numeric.null_count() == 0
        else pl.DataFrame({name: unique}).sort(name)
    )
    return order.select(pl.col(name), pl.int_range(pl.len(), dtype=pl.Int32).alias(f"{name.removesuffix('_id')}_idx"))


def k_core(events: pl.LazyFrame | pl.DataFrame, min_user: int, min_item: int) -> tuple[pl.DataFrame, int]:
    """Drop users/items below the thresholds until none is left (a fixed point)."""
    frame = events.lazy() if isinstance(events, pl.DataFrame) else events
    frame = frame.collect()
    iterations = 0
    while True:
        iterations += 1
        keep = (pl.len().over("user_id") >= min_user) & (pl.len().over("item_id") >= min_item)
        kept = frame.filter(keep)
        if kept.height == frame.height:
            return kept, iterations
        frame = kept


def sessionize(frame: pl.DataFrame, gap_seconds: float) -> pl.DataFrame:
    """Session number (0-based) per user of a frame sorted by user then time.

    Given session ids cut wherever the id changes (so sessions are contiguous runs);
    otherwise a new session starts where the gap to the previous event exceeds the limit.
    """
    new_user = pl.col("user_idx") != pl.col("user_idx").shift(1)
    if frame["session_id"].null_count() == 0:
        cut = pl.col("session_id") != pl.col("session_id").shift(1)
    else:
        cut = (pl.col("timestamp") - pl.col("timestamp").shift(1)) > gap_seconds
    frame = frame.with_columns((new_user | cut).fill_null(True).cast(pl.Int32).cum_sum().alias("_starts"))
    session = pl.col("_starts") - pl.col("_starts").first().over("user_idx")
    return frame.with_columns(session.cast(pl.Int32).alias("session")).drop("_starts")


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
    deduped = events.unique(["user_id", "item_id", "behavior", "timestamp"], keep="first", maintain_order=True)
    cored, iterations = k_core(deduped, filters.min_user_events, filters.min_item_events)
    if cored.height == 0:
        raise InputError(
            f"no events left after the k-core filter (min_user_events={filters.min_user_events}, "
            f"min_item_events={filters.min_item_events}) on {deduped.height} events. Lower the thresholds "
            "under `filters:` in the dataset declaration."
        )
    users = _dense_ids(cored["user_id"], "user_id")
    items = _dense_ids(cored["item_id"], "item_id")
    frame = (
        cored.join(users, on="user_id")
        .join(items, on="item_id")
        .join(behavior_table.select("behavior", "behavior_idx", "level"), on="behavior")
        .sort(["user_idx", "timestamp", "level", "source_row"])
    )
    frame = sessionize(frame, session_gap_minutes * 60.0)
    frame = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("user_idx").alias("pos"))

    last = pl.col("session").max()
    sequences = frame.group_by("user_idx", maintain_order=True).agg(
        pl.col("item_idx").alias("item"),
        pl.col("behavior_idx").alias("behavior"),
        pl.col("timestamp"),
        pl.col("session"),
        pl.len().cast(pl.Int32).alias("n_events"),
        (last + 1).cast(pl.Int32).alias("n_sessions"),
        pl.col("pos").filter(pl.col("session") == last - 1).min().alias("_ls_valid"),
        pl.col("pos").filter(pl.col("session") == last).min().alias("_ls_test"),
    )
    has_events = pl.col("n_events") >= 3
    has_sessions = pl.col("n_sessions") >= filters.min_sessions
    sequences = sequences.with_columns(
        pl.when(has_events).then(pl.col("n_events") - 2).otherwise(-1).cast(pl.Int32).alias("last_event_valid"),
        pl.when(has_events).then(pl.col("n_events") - 1).otherwise(-1).cast(pl.Int32).alias("last_event_test"),
        pl.when(has_sessions).then(pl.col("_ls_valid")).otherwise(-1).cast(pl.Int32).alias("last_session_valid"),
        pl.when(has_sessions).then(pl.col("_ls_test")).otherwise(-1).cast(pl.Int32).alias("last_session_test"),
    ).drop("_ls_valid", "_ls_test")

    item_counts = frame.group_by("item_idx").agg(pl.len().cast(pl.Int32).alias("n_events"))
    items = items.join(item_counts, on="item_idx").sort("item_idx")
    if item_text is not None and item_text.width > 1:
        text = item_text.unique("item_id", keep="first")
        items = items.join(text, on="item_id", how="left")
    users = users.sort("user_idx")
    behavior_counts = frame.group_by("behavior_idx").agg(pl.len().alias("n_events"))
    behavior_table = behavior_table.join(behavior_counts, on="behavior_idx", how="left").with_columns(
        pl.col("n_events").fill_null(0)
    ).sort("behavior_idx")

    stats = {
        "n_events_valid": n_in,
        "n_duplicates": n_in - deduped.height,
        "n_filtered_kcore": deduped.height - cored.height,
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
        n_in, deduped.height, stats["n_duplicates"], iterations, stats["n_filtered_kcore"], stats["n_users"],
        stats["n_items"], stats["n_sessions"], stats["users_last_session"], filters.min_sessions,
    )
    return Primary(
        sequences=check_contract(SEQUENCES, sequences),
        items=check_contract(ITEMS, items),
        users=check_contract(USERS, users),
        behaviors=behavior_table,
        stats=stats,
    )


def split_positions(sequences: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """user_idx, valid and test split points for a protocol, eligible users only."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown split.protocol '{protocol}'; choose one of {list(PROTOCOLS)}")
    return sequences.filter(pl.col(f"{protocol}_test") >= 0).select(
        "user_idx", pl.col(f"{protocol}_valid").alias("valid"), pl.col(f"{protocol}_test").alias("test")
    )
