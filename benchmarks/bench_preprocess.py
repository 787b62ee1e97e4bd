"""Ingest + preprocess throughput on a realistic synthetic log, against a per-user Python loop.

    python benchmarks/bench_preprocess.py [--events 10000000] [--baseline-events 1000000]

Generates a raw events CSV (Zipf item popularity, bursty sessions, 4 behaviors, a few
invalid rows), then in the same run times
- ours: ``read_events -> validate_events -> build_primary`` + writing the primary tables
  (exactly what the ``ingest`` and ``preprocess`` nodes call), in a child process so its
  peak RSS is measured alone;
- baseline: the same steps done per user in a Python loop over pandas groups (the reference
  code's style), on the first ``--baseline-events`` rows; and, for scale, a lean plain-Python
  version (csv module, dicts and lists) on the same rows.
Writes JSON with a top-level ``ratio`` (our events/s / pandas-per-user events/s) and
``ratio_vs_plain_python_loop``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

BEHAVIORS = {"pv": 0, "fav": 1, "cart": 1, "buy": 2}
GAP = 30 * 60


def generate_log(path: Path, n_events: int, seed: int = 0) -> dict:
    """Raw log in the Taobao UserBehavior layout (headerless user,item,category,behavior,ts)."""
    rng = np.random.default_rng(seed)
    n_users = max(n_events // 60, 10)
    n_items = max(n_events // 10, 100)
    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = np.maximum(1, np.round(activity / activity.sum() * n_events)).astype(np.int64)
    per_user[-1] += n_events - per_user.sum()
    per_user = np.maximum(per_user, 1)
    users = np.repeat(np.arange(n_users), per_user)[:n_events]
    n = users.size
    # bursty sessions: each user's events fall into a few sessions spread over 9 days,
    # with short exponential gaps inside a session
    sessions_per_user = np.maximum(1, per_user // 8)
    session_of_event = (rng.random(n) * sessions_per_user[users]).astype(np.int64)
    session_key = users * 1_000_000 + session_of_event
    uniq, inverse = np.unique(session_key, return_inverse=True)
    session_start = 1_511_539_200 + rng.integers(0, 9 * 86400, uniq.size)
    order = np.lexsort((rng.random(n), inverse))
    gaps = rng.exponential(60.0, n).astype(np.int64)
    offsets = np.empty(n, dtype=np.int64)
    csum = np.cumsum(gaps[order])
    first = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    group_start = np.repeat(csum[first] - gaps[order][first], np.diff(np.r_[first, n]))
    offsets[order] = csum - group_start
    timestamps = session_start[inverse] + offsets
    items = (rng.zipf(1.2, n) - 1) % n_items
    behaviors = rng.choice(list(BEHAVIORS), n, p=[0.89, 0.03, 0.05, 0.03])
    frame = pl.DataFrame({"user": users, "item": items, "category": items % 5000, "behavior": behaviors,
                          "ts": timestamps.astype(str)})
    # real-world defects: unparseable timestamps and unknown behaviors (~0.01 %)
    bad = rng.choice(n, max(n // 10_000, 2), replace=False)
    ts = frame["ts"].to_numpy().astype(object)
    ts[bad[: len(bad) // 2]] = "n/a"
    beh = frame["behavior"].to_numpy().astype(object)
    beh[bad[len(bad) // 2:]] = "click"
    frame = frame.with_columns(pl.Series("ts", ts.astype(str)), pl.Series("behavior", beh.astype(str)))
    frame.write_csv(path, include_header=False)
    return {"events": n, "users": n_users, "items": n_items, "file_mb": round(path.stat().st_size / 2**20, 1)}


# ----------------------------------------------------------------------------- ours
OURS = r"""
import json, sys, time
t0 = time.perf_counter()


def arrow_bytes(frame):
    # bytes of the table in Arrow layout (values + offsets + validity), computed without converting it
    import polars as pl
    total = 0
    for name, dtype in frame.schema.items():
        col = frame[name]
        validity = (len(col) + 7) // 8 if col.null_count() else 0
        if dtype == pl.String:
            total += int(col.str.len_bytes().sum() or 0) + 4 * (len(col) + 1) + validity
        else:
            total += col.to_numpy().itemsize * len(col) + validity
    return total


def peak_rss_mb():
    # VmHWM of this process image (ru_maxrss would include the forking parent's pages)
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024


from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.data.ingest import ingest_events
from seqrec_pipeline.data.preprocess import build_primary
path, out = sys.argv[1], sys.argv[2]
spec = resolve_dataset("bench", {"bench": {
    "path": path.rsplit("/", 1)[0], "events": path.rsplit("/", 1)[1], "header": False,
    "column_names": ["user_id", "item_id", "category_id", "behavior", "timestamp"],
    "behaviors": {"pv": 0, "fav": 1, "cart": 1, "buy": 2}, "timestamp_unit": "s"}})
t_import = time.perf_counter()
events, rejected, levels = ingest_events(spec)  # streamed read + typing + validation + quarantine
t_valid = time.perf_counter()
events_bytes = arrow_bytes(events)
events_estimated = events.estimated_size()
primary = build_primary(events, spec.behavior_levels, spec.filters, spec.session_gap_minutes)
t_prep = time.perf_counter()
for name in ("sequences", "items", "users"):
    getattr(primary, name).write_parquet(f"{out}/{name}.parquet")
t_end = time.perf_counter()
print(json.dumps({
    "seconds": t_end - t_import, "ingest_s": t_valid - t_import,
    "preprocess_s": t_prep - t_valid, "write_s": t_end - t_prep,
    "n_valid": events.height, "n_rejected": rejected.height, "events_table_mb": events_bytes / 2**20,
    "events_table_polars_estimated_mb": events_estimated / 2**20,
    "n_users": primary.stats["n_users"], "n_items": primary.stats["n_items"],
    "n_events_out": primary.stats["n_events"], "n_sessions": primary.stats["n_sessions"],
    "peak_rss_mb": peak_rss_mb()}))
"""


def run_ours(path: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", OURS, str(path), str(out)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- baseline
def baseline_per_user_loop(path: Path, limit: int, min_user=5, min_item=5, min_sessions=3) -> dict:
    """The same steps, the straightforward way: rows and users handled one at a time in Python."""
    t0 = time.perf_counter()
    valid, rejected = [], 0
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if i >= limit:
                break
            if len(row) != 5 or row[3] not in BEHAVIORS or not row[0] or not row[1]:
                rejected += 1
                continue
            try:
                ts = int(float(row[4]))
            except ValueError:
                rejected += 1
                continue
            valid.append((row[0], row[1], row[3], ts))
    per_user = defaultdict(list)
    for user, item, behavior, ts in valid:
        per_user[user].append((ts, BEHAVIORS[behavior], item, behavior))
    for user in per_user:  # dedup + order by (time, level)
        per_user[user] = sorted(set(per_user[user]))
    while True:  # k-core
        item_count = defaultdict(int)
        for events in per_user.values():
            for e in events:
                item_count[e[2]] += 1
        changed = False
        for user in list(per_user):
            kept = [e for e in per_user[user] if item_count[e[2]] >= min_item]
            if len(kept) < min_user:
                del per_user[user]
                changed = True
            elif len(kept) != len(per_user[user]):
                per_user[user] = kept
                changed = True
        if not changed:
            break
    items = {it: i for i, it in enumerate(sorted({e[2] for ev in per_user.values() for e in ev}))}
    out = {}
    for u, user in enumerate(sorted(per_user)):
        events = per_user[user]
        sessions, s = [], 0
        for j, e in enumerate(events):
            if j and e[0] - events[j - 1][0] > GAP:
                s += 1
            sessions.append(s)
        starts = [j for j in range(len(events)) if j == 0 or sessions[j] != sessions[j - 1]]
        ls = (starts[-2], starts[-1]) if len(starts) >= min_sessions else (-1, -1)
        out[u] = ([items[e[2]] for e in events], [e[1] for e in events], sessions, ls)
    return {"seconds": time.perf_counter() - t0, "n_rows": min(limit, i + 1), "n_valid": len(valid),
            "n_rejected": rejected, "n_users": len(out), "n_items": len(items)}


def baseline_pandas_per_user(path: Path, limit: int, min_user=5, min_item=5, min_sessions=3) -> dict:
    """The reference code's style: a pandas table, then per-user groups handled in a Python loop."""
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_csv(path, header=None, names=["user", "item", "category", "behavior", "ts"], dtype=str,
                     nrows=limit, on_bad_lines="skip", engine="c")
    df["ts"] = pd.to_numeric(df["ts"], errors="coerce")
    ok = df["behavior"].isin(list(BEHAVIORS)) & df["ts"].notna() & df["user"].notna() & df["item"].notna()
    rejected = int((~ok).sum())
    df = df[ok].copy()
    df["level"] = df["behavior"].map(BEHAVIORS)
    per_user = {}
    for user, g in df.groupby("user", sort=True):  # dedup and order each user's events
        per_user[user] = g.drop_duplicates(["item", "behavior", "ts"]).sort_values(["ts", "level"], kind="stable")
    while True:  # k-core
        item_count = pd.concat([g["item"] for g in per_user.values()]).value_counts()
        changed = False
        for user in list(per_user):
            g = per_user[user]
            kept = g[g["item"].map(item_count) >= min_item]
            if len(kept) < min_user:
                del per_user[user]
                changed = True
            elif len(kept) != len(g):
                per_user[user] = kept
                changed = True
        if not changed:
            break
    items = {it: i for i, it in enumerate(sorted(pd.concat([g["item"] for g in per_user.values()]).unique()))}
    out = {}
    for u, g in enumerate(per_user.values()):  # sessions and split points, user by user
        session = (g["ts"].diff() > GAP).cumsum().tolist()
        starts = [j for j in range(len(session)) if j == 0 or session[j] != session[j - 1]]
        ls = (starts[-2], starts[-1]) if len(starts) >= min_sessions else (-1, -1)
        out[u] = (g["item"].map(items).tolist(), g["level"].tolist(), session, ls)
    return {"seconds": time.perf_counter() - t0, "n_rows": min(limit, len(ok)), "n_valid": len(df),
            "n_rejected": rejected, "n_users": len(out), "n_items": len(items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--baseline-events", type=int, default=1_000_000)
    ap.add_argument("--out", default="data/08_reporting/benchmarks/preprocess.json")
    ap.add_argument("--workdir", default=None, help="where the synthetic log is written (default: a temp dir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        data = generate_log(tmp / "events.csv", args.events)
        print(f"generated {data} in {time.perf_counter() - t:.1f} s", flush=True)
        (tmp / "out").mkdir()
        ours = run_ours(tmp / "events.csv", tmp / "out")
        print("ours:", json.dumps(ours), flush=True)
        base = baseline_pandas_per_user(tmp / "events.csv", args.baseline_events)
        print("baseline (pandas per user):", json.dumps(base), flush=True)
        loop = baseline_per_user_loop(tmp / "events.csv", args.baseline_events)
        print("baseline (plain Python loop):", json.dumps(loop), flush=True)

    ours_tput = data["events"] / ours["seconds"]
    base_tput = base["n_rows"] / base["seconds"]
    loop_tput = loop["n_rows"] / loop["seconds"]
    result = {
        "benchmark": "ingest+preprocess",
        "ratio": round(ours_tput / base_tput, 2),
        "ratio_vs_plain_python_loop": round(ours_tput / loop_tput, 2),
        "ours": {**ours, "events": data["events"], "events_per_s": round(ours_tput)},
        "baseline": {**base, "name": "per-user pandas loop (the reference code's style)",
                     "events_per_s": round(base_tput)},
        "baseline_plain_python_loop": {**loop, "name": "per-row csv + per-user dict/list loop",
                                       "events_per_s": round(loop_tput)},
        # peak RSS / the validated events table in Arrow layout (polars' estimated_size undercounts string views)
        "memory_ratio": round(ours["peak_rss_mb"] / ours["events_table_mb"], 2),
        "targets": {"seconds_10M": 60, "ratio": 20, "memory_ratio": 4},
        "data": data,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ratio", "ratio_vs_plain_python_loop", "memory_ratio")}
                     | {"ours_s": round(ours["seconds"], 1), "peak_rss_mb": round(ours["peak_rss_mb"])}))


if __name__ == "__main__":
    main()
