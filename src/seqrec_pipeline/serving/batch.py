"""Batch recommendations: top-k raw item ids per (user, behavior) from each user's whole log."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.splits import latest_set

from .recommender import Recommender

log = logging.getLogger(__name__)


def read_user_ids(path: str | Path) -> list[str]:
    """Raw user ids, one per line (blank lines and surrounding spaces ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recommend.users: no file {path} (give 'all' or a file of raw user ids, one per line)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def select_users(sequences: pl.DataFrame, users: pl.DataFrame, which: str) -> tuple[pl.DataFrame, dict]:
    """The rows of ``sequences`` of ``which`` users (``"all"`` or a file of raw ids; unknown ids are counted,
    duplicates answered once), with the user_id column, and counts for the report."""
    table = sequences.join(users.select("user_idx", "user_id"), on="user_idx", how="inner")
    if which == "all":
        return table, {"n_requested": table.height, "n_unknown_users": 0}
    wanted = pl.DataFrame({"user_id": list(dict.fromkeys(read_user_ids(which)))}, schema={"user_id": pl.Utf8})
    found = wanted.join(table, on="user_id", how="inner", maintain_order="left")
    unknown = wanted.height - found.height
    if unknown:
        missing = wanted.join(table, on="user_id", how="anti")["user_id"].head(5).to_list()
        log.warning("%d of %d requested users are not in the log (e.g. %s); they are left out", unknown,
                    wanted.height, missing)
    return found, {"n_requested": wanted.height, "n_unknown_users": unknown}


def recommend_users(recommender: Recommender, sequences: pl.DataFrame, users: pl.DataFrame, *, which: str = "all",
                    behaviors: list[str] | str = "all", k: int, use_repeat: bool = True,
                    max_history: int | None = None, chunk_users: int | None = None) -> tuple[pl.DataFrame, dict]:
    """One row per (user, requested behavior): ``user_id``, ``behavior``, ranked raw ``items`` and ``scores``
    (the mixture's probabilities with the repeat head, else the beam's summed log-probabilities), from each
    user's whole log (its last ``max_history`` events; default the trained model's window).  Users are ranked
    ``chunk_users`` at a time (default: all at once), which bounds the memory of a large log; a user's lists
    depend on its own log only (up to float rounding in the batched beam search)."""
    k = recommender.check_k(k)
    wanted = recommender.behavior_indices(behaviors)
    selected, counts = select_users(sequences, users, which)
    names = np.asarray(recommender.behaviors.names)
    step = chunk_users or max(selected.height, 1)
    parts = []
    with tqdm(total=selected.height, desc="recommend", unit="user", disable=selected.height <= step) as bar:
        for start in range(0, max(selected.height, 1), step):  # no user: one empty chunk, the table's columns
            chunk = selected.slice(start, step)
            data = latest_set(chunk, max_history or recommender.settings.max_history, wanted)
            items, scores = recommender.ranked_lists(recommender.rank(data, k, use_repeat))
            behavior = pl.Series("behavior", names[data.sample_behavior], dtype=pl.Utf8)
            parts.append(pl.DataFrame([chunk["user_id"].gather(data.sample_user).alias("user_id"), behavior, items,
                                       scores]))
            bar.update(chunk.height)
    table = pl.concat(parts)
    repeat = recommender.mixture is not None and use_repeat
    summary = counts | {"n_users": selected.height, "n_rows": table.height, "k": k,
                        "behaviors": names[wanted].tolist(), "repeat_head": repeat}
    log.info("recommendations for %d users x %d behaviors (k=%d, %s)", selected.height, len(wanted), k,
             "model + repeat head" if repeat else "model alone")
    return table, summary
