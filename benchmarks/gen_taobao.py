"""Synthetic event logs in the Taobao UserBehavior layout, written in chunks (never the whole log in memory).

    python benchmarks/gen_taobao.py OUT.csv --events 100000000 [--seed 0]

Headerless ``user_id,item_id,category_id,behavior,timestamp`` rows, shaped like the real file:
Zipf item popularity (about 4 items per 100 events), heavy-tailed (log-normal) user activity
(about one user per 100 events), the real behavior mix (pv 89.5 %, cart 5.5 %, fav 2.9 %, buy 2.1 %),
timestamps in the 9-day window 2017-11-25 .. 2017-12-03 with bursty sessions, a user's rows
together but not in time order (as in the real file), and ~0.01 % malformed rows (unparseable
timestamps, unknown behaviors, empty item ids, times outside the window).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

BEHAVIORS = ["pv", "cart", "fav", "buy"]
MIX = [0.895, 0.055, 0.029, 0.021]
WINDOW = (1_511_539_200, 1_512_316_800)  # 2017-11-25 00:00 .. 2017-12-04 00:00 UTC
USERS_PER_CHUNK = 20_000


def _chunk(rng: np.random.Generator, first_user: int, per_user: np.ndarray, n_items: int,
           bad_rate: float) -> pl.DataFrame:
    """Rows of consecutive users ``first_user..``; ``per_user`` their event counts."""
    n = int(per_user.sum())
    users = np.repeat(np.arange(first_user, first_user + per_user.size, dtype=np.int64), per_user)
    # bursty sessions: ~8 events per session, session starts uniform over the window, short gaps inside
    sessions = np.maximum(1, per_user // 8)
    local = users - first_user
    session = (rng.random(n) * sessions[local]).astype(np.int64)
    key = local * (int(sessions.max()) + 1) + session
    uniq, inverse = np.unique(key, return_inverse=True)
    start = rng.integers(WINDOW[0], WINDOW[1] - 3 * 3600, uniq.size)
    order = np.lexsort((rng.random(n), inverse))
    gaps = rng.exponential(60.0, n).astype(np.int64)[order]
    csum = np.cumsum(gaps)
    first = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    base = np.repeat(csum[first] - gaps[first], np.diff(np.r_[first, n]))
    offsets = np.empty(n, dtype=np.int64)
    offsets[order] = csum - base
    ts = np.minimum(start[inverse] + offsets, WINDOW[1] - 1)
    # Zipf popularity over a fixed random relabelling, so popular items are not the small ids
    rank = (rng.zipf(1.1, n) - 1) % n_items
    items = (rank * 2_654_435_761 + 12_345) % n_items + 1
    behavior = rng.choice(len(BEHAVIORS), n, p=MIX).astype(np.int8)
    frame = pl.DataFrame({
        "user_id": users + 1, "item_id": items, "category_id": items % 9_439 + 1,
        "behavior": pl.Series(behavior).replace_strict(dict(enumerate(BEHAVIORS)), return_dtype=pl.Utf8),
        "timestamp": ts,
    }).with_columns(pl.col(c).cast(pl.Utf8) for c in ("user_id", "item_id", "category_id", "timestamp"))
    n_bad = rng.binomial(n, bad_rate)
    if n_bad:
        at = rng.choice(n, n_bad, replace=False)
        kind = rng.integers(0, 4, n_bad)
        col = lambda name, k, value: pl.when(pl.int_range(n).is_in(at[kind == k])).then(  # noqa: E731
            pl.lit(value)).otherwise(pl.col(name)).alias(name)
        frame = frame.with_columns(col("timestamp", 0, "n/a"), col("behavior", 1, "click"),
                                   col("item_id", 2, ""))
        frame = frame.with_columns(col("timestamp", 3, str(WINDOW[0] - 86_400 * 400)))
    return frame


def generate(path: Path, n_events: int, seed: int = 0, bad_rate: float = 1e-4) -> dict:
    rng = np.random.default_rng(seed)
    n_users = max(n_events // 100, 10)
    n_items = max(n_events // 25, 100)
    activity = rng.lognormal(0.0, 1.2, n_users)
    per_user = np.maximum(1, np.floor(activity / activity.sum() * n_events)).astype(np.int64)
    short = n_events - int(per_user.sum())  # rounding: spread the rest over the most active users
    top = np.argsort(-per_user)[: abs(short)]
    per_user[top] += np.sign(short)
    per_user = np.maximum(per_user, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for lo in range(0, n_users, USERS_PER_CHUNK):
            _chunk(rng, lo, per_user[lo:lo + USERS_PER_CHUNK], n_items, bad_rate).write_csv(fh, include_header=False)
    return {"path": str(path), "events": int(per_user.sum()), "users": n_users, "item_space": n_items,
            "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - t0, 1), "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(generate(args.out, args.events, args.seed)))


if __name__ == "__main__":
    main()
