"""Dataset report: the numbers a person checks before training on a dataset, and one figure.

Besides sizes and distributions it reports the **repeat share** of the session-wise split: per behavior, the
share of target events whose item already occurs in an earlier session of the same user, for the training
sessions, the validation session and the test session.  A high test share makes the ``recent`` rule (repeat
the newest history items) a strong baseline; a test share far above the training share means the test
sessions repeat history much more often than anything a model can learn from (retailrocket: 9 % of
training buys vs 56 % of test buys).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: reports are written, never shown
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from seqrec_pipeline.splits import protocol_users, seen_before, split_columns


def _summary(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0}
    return {
        "mean": round(float(values.mean()), 3),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": int(values.max()),
    }


def user_slices(sequences: pl.DataFrame, events: int | None = None):
    """Consecutive row slices of whole users with about ``events`` events each (None: the whole table), so
    that what is computed per event holds one slice at a time."""
    if events is None or sequences.height == 0:
        yield sequences
        return
    ends = np.cumsum(sequences["n_events"].to_numpy(), dtype=np.int64)
    cuts = np.unique(np.searchsorted(ends, np.arange(events, int(ends[-1]), events), side="right"))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, sequences.height]):
        if hi > lo:
            yield sequences.slice(int(lo), int(hi - lo))


def session_lengths(sequences: pl.DataFrame, events: int | None = None) -> np.ndarray:
    return np.concatenate([
        part.select("user_idx", "session").explode("session").group_by("user_idx", "session").len()["len"].to_numpy()
        for part in user_slices(sequences, events)])


def repeat_shares(sequences: pl.DataFrame, behaviors: pl.DataFrame, events: int | None = None) -> dict:
    """Share of events whose item occurs in an earlier session of the same user (``splits``' repeat rule with
    the ``last_session`` history), per behavior and part.

    Only users of the ``last_session`` split count.  Parts: ``train`` = events of the training prefix outside
    the user's first session (the first has no history), ``valid`` / ``test`` = the validation / test session.
    Returns ``{part: {behavior: {"events": n, "repeat_share": s}}}`` (``s`` is None without events); counted
    over slices of about ``events`` events (None: all at once).
    """
    names = dict(zip(behaviors["behavior_idx"].to_list(), behaviors["behavior"].to_list()))
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    for part in user_slices(sequences, events):  # sliced before filtering: a filter copies the lists
        for key, (n, k) in _repeat_counts(protocol_users(part, "last_session")).items():
            before = counts.get(key, (0, 0))
            counts[key] = (before[0] + n, before[1] + k)
    out = {}
    for part in ("train", "valid", "test"):
        out[part] = {}
        for idx, name in names.items():
            n, k = counts.get((part, idx), (0, 0))
            out[part][name] = {"events": int(n), "repeat_share": round(k / n, 4) if n else None}
    return out


def _repeat_counts(users: pl.DataFrame) -> dict[tuple[str, int], tuple[int, int]]:
    """(part, behavior_idx) -> (events, repeats) of some users of the last_session split."""
    valid_col, test_col = split_columns("last_session")
    events = (
        users
        .select("user_idx", "item", "behavior", "session", valid_col, test_col,
                pos=pl.int_ranges(pl.col("item").list.len()))
        .explode("item", "behavior", "session", "pos")
        .with_columns(session_start=pl.col("pos").min().over("user_idx", "session"))
        .with_columns(
            part=pl.when(pl.col("pos") >= pl.col(test_col)).then(pl.lit("test"))
            .when(pl.col("pos") >= pl.col(valid_col)).then(pl.lit("valid"))
            .when(pl.col("session_start") > 0).then(pl.lit("train"))
            .otherwise(None),
            repeat=seen_before(pl.col("session_start"), user="user_idx"),
        )
        .drop_nulls("part")
        .group_by("part", "behavior")
        .agg(events=pl.len(), repeats=pl.col("repeat").sum())
    )
    return {(r["part"], r["behavior"]): (r["events"], r["repeats"]) for r in events.iter_rows(named=True)}


def build_report(dataset: str, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                 ingest: dict, preprocess: dict, events_per_slice: int | None = None) -> dict:
    """The dataset report; per-event figures are computed over user slices of ``events_per_slice`` events."""
    events_per_user = sequences["n_events"].to_numpy()
    sessions_per_user = sequences["n_sessions"].to_numpy()
    first, last = sequences.select(pl.col("timestamp").list.min().min().alias("first"),
                                   pl.col("timestamp").list.max().max().alias("last")).row(0)
    n_users, n_items, n_events = sequences.height, items.height, int(events_per_user.sum())
    scalars = sequences.select(pl.exclude(pl.List))  # the protocol filters below copy no lists
    ls = protocol_users(scalars, "last_session")
    return {
        "dataset": dataset,
        "n_users": n_users,
        "n_items": n_items,
        "n_events": n_events,
        "n_sessions": int(sessions_per_user.sum()),
        "density": round(n_events / max(n_users * n_items, 1), 6),
        "time_span": {"first": int(first), "last": int(last)},
        "behaviors": {
            r["behavior"]: {"level": int(r["level"]), "events": int(r["n_events"]), "target": bool(r["is_target"])}
            for r in behaviors.iter_rows(named=True)
        },
        "events_per_user": _summary(events_per_user),
        "sessions_per_user": _summary(sessions_per_user),
        "events_per_session": _summary(session_lengths(sequences, events_per_slice)),
        "events_per_item": _summary(items["n_events"].to_numpy()),
        "splits": {
            "last_event": {"users": protocol_users(scalars, "last_event").height},
            "last_session": {
                "users": ls.height,
                "test_targets": int((ls["n_events"] - ls["last_session_test"]).sum()),
                "valid_targets": int((ls["last_session_test"] - ls["last_session_valid"]).sum()),
            },
        },
        "repeat_share": repeat_shares(sequences, behaviors, events_per_slice),
        "ingest": ingest,
        "preprocess": preprocess,
    }


def report_metrics(report: dict) -> dict:
    """Flat numeric view of the report, in kedro-mlflow's metrics format."""
    flat = {
        "data/n_users": report["n_users"],
        "data/n_items": report["n_items"],
        "data/n_events": report["n_events"],
        "data/n_sessions": report["n_sessions"],
        "data/density": report["density"],
        "data/n_raw": report["ingest"]["n_raw"],
        "data/n_rejected": report["ingest"]["n_rejected"],
        "data/n_duplicates": report["preprocess"]["n_duplicates"],
        "data/n_filtered_kcore": report["preprocess"]["n_filtered_kcore"],
        "data/users_last_event": report["splits"]["last_event"]["users"],
        "data/users_last_session": report["splits"]["last_session"]["users"],
        "data/events_per_user_mean": report["events_per_user"]["mean"],
        "data/events_per_session_mean": report["events_per_session"]["mean"],
    }
    flat.update({f"data/events_{b}": v["events"] for b, v in report["behaviors"].items()})
    flat.update({
        f"data/repeat_share_{part}_{b}": v["repeat_share"]
        for part, shares in report["repeat_share"].items() for b, v in shares.items() if v["repeat_share"] is not None
    })
    return {k: {"value": float(v), "step": 0} for k, v in flat.items()}


def report_figure(report: dict, sequences: pl.DataFrame, items: pl.DataFrame | None = None,
                  events_per_slice: int | None = None) -> plt.Figure:
    """Six panels: behavior mix, repeat share per split part, events per user, sessions per user, events per
    session, events per item."""
    fig, axes = plt.subplots(2, 3, figsize=(16, 7.5), constrained_layout=True)
    fig.suptitle(
        f"{report['dataset']}: {report['n_users']:,} users · {report['n_items']:,} items · "
        f"{report['n_events']:,} events · {report['n_sessions']:,} sessions",
        fontsize=13,
    )
    names = list(report["behaviors"])
    counts = [report["behaviors"][b]["events"] for b in names]
    colors = ["#c44e52" if report["behaviors"][b]["target"] else "#4c72b0" for b in names]
    ax = axes[0, 0]
    bars = ax.bar(names, counts, color=colors)
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=9)
    ax.set_title("events per behavior (red = target, ordered by index)")
    ax.set_yscale("log" if max(counts) > 50 * max(min(counts), 1) else "linear")

    ax = axes[0, 1]
    width = 0.8 / 3
    for i, (part, color) in enumerate((("train", "#8c8c8c"), ("valid", "#4c72b0"), ("test", "#c44e52"))):
        shares = [report["repeat_share"][part][b]["repeat_share"] or 0.0 for b in names]
        bars = ax.bar(np.arange(len(names)) + (i - 1) * width, shares, width, color=color, label=f"{part} sessions")
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in shares], fontsize=8)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_title("repeat share: items already seen in an earlier session")
    ax.legend(frameon=False, fontsize=9)

    def hist(ax, values, title, xlabel):
        values = np.asarray(values)
        bins = np.unique(np.geomspace(1, max(values.max(), 2), 30).round()) if values.max() > 60 else np.arange(
            0.5, values.max() + 1.5)
        ax.hist(values, bins=bins, color="#55a868", edgecolor="white")
        if values.max() > 60:
            ax.set_xscale("log")
        ax.axvline(np.median(values), color="black", ls="--", lw=1, label=f"median {np.median(values):g}")
        ax.legend(frameon=False)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")

    hist(axes[0, 2], sequences["n_events"].to_numpy(), "sequence length", "events per user")
    hist(axes[1, 0], sequences["n_sessions"].to_numpy(), "sessions per user", "sessions")
    hist(axes[1, 1], session_lengths(sequences, events_per_slice), "session length", "events per session")
    if items is not None and "n_events" in items.columns:
        hist(axes[1, 2], items["n_events"].to_numpy(), "item popularity", "events per item")
    else:
        axes[1, 2].axis("off")
    return fig
