"""The outputs of one evaluated run: metrics.json, the predictions table, the metrics plot, MLflow metrics.

``metrics.json`` keys are stable (``docs/design.md#evaluation``); MLflow metric names cannot contain '@',
so they are logged as ``test/<merged|behavior>/<metric>_at_<k>``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")  # headless: reports are written, never shown
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.ranking import Ranking, metrics_by_behavior
from seqrec_pipeline.ranking.metrics import history_share, metrics_by_part
from seqrec_pipeline.splits import EvalSet

log = logging.getLogger(__name__)


def predictions_table(data: EvalSet, ranking: Ranking) -> pl.DataFrame:
    """One row per sample: user, behavior, ranked items (and scores), targets, per target whether it repeats
    an item of the user's history (``repeat``, the rule of ``splits``) and per ranked item whether it comes
    from the history (``in_history``)."""
    table = pl.DataFrame({
        "user_idx": data.user_idx[data.sample_user].astype(np.int32),
        "behavior_idx": data.sample_behavior.astype(np.int8),
        "items": ranking.items.astype(np.int32).tolist(),
        "targets": [list(map(int, t)) for t in data.targets],
    })
    if ranking.scores is not None:
        table = table.with_columns(pl.Series("scores", np.nan_to_num(ranking.scores, neginf=-1e30).tolist()))
    return table.with_columns(pl.Series("repeat", data.repeat, dtype=pl.List(pl.Boolean)),
                              pl.Series("in_history", data.in_past(ranking.items).tolist(), dtype=pl.List(pl.Boolean)))


def ranking_from_predictions(predictions: pl.DataFrame, data: EvalSet) -> Ranking:
    """The :class:`Ranking` a predictions table holds, checked to be of ``data``'s samples, in order."""
    users = data.user_idx[data.sample_user]
    if (predictions.height != data.n_samples or not np.array_equal(predictions["user_idx"].to_numpy(), users)
            or not np.array_equal(predictions["behavior_idx"].to_numpy(), data.sample_behavior)):
        raise ValueError("the predictions table does not hold this evaluation set's samples in order")
    items = ranked_items(predictions)
    scores = None
    if "scores" in predictions.columns:
        width = items.shape[1]
        padded = predictions["scores"].list.concat(pl.lit([-1e30] * width, dtype=pl.List(pl.Float64))).list.head(width)
        scores = np.stack(padded.to_numpy()).astype(np.float32)
        scores[items < 0] = -np.inf
    return Ranking(items, scores)


def ranked_items(predictions: pl.DataFrame) -> np.ndarray:
    """The ``items`` lists of a predictions table as ``[n_samples, K]`` (-1 pads shorter lists)."""
    lists = predictions["items"]
    width = max(int(lists.list.len().max() or 0), 1)
    padded = lists.list.concat(pl.lit([-1] * width, dtype=pl.List(pl.Int64))).list.head(width)
    return np.stack(padded.to_numpy()).astype(np.int64) if len(padded) else np.empty((0, width), dtype=np.int64)


def metrics_report(predictions: pl.DataFrame, *, behavior_names: list[str], ks: list[int], dataset: str,
                   pipeline: str, model: str, tokenizer: str | None, protocol: str, n_items: int,
                   behavior_accuracy: float | None = None) -> dict:
    """The metrics.json of one evaluated run, from its predictions table."""
    if predictions.height == 0:
        raise InputError(f"{pipeline} {model} on {dataset} ({protocol}): no test samples to evaluate; check the "
                         "dataset's filters (min_sessions) and split.protocol")
    items, behavior = ranked_items(predictions), predictions["behavior_idx"].to_numpy()
    targets = predictions["targets"].to_list()
    m = metrics_by_behavior(items, targets, behavior, ks=ks, behavior_names=behavior_names)
    parts = metrics_by_part(items, targets, predictions["repeat"].to_list(), behavior, ks, behavior_names)
    share = history_share(_padded(predictions["in_history"], items.shape[1]), items, max(ks))
    names = [behavior_names[b] for b in behavior]
    return {
        "dataset": dataset, "pipeline": pipeline, "model": model, "tokenizer": tokenizer, "protocol": protocol,
        "n_users": int(predictions["user_idx"].n_unique()), "n_items": int(n_items), "n_test": predictions.height,
        "metrics": {"merged": m["merged"], "by_behavior": m["by_behavior"]},
        "behavior_accuracy": behavior_accuracy,
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "n_samples": m["n_samples"],
        "parts": parts,
        "history_share": {"merged": float(share.mean()),
                          "by_behavior": {n: float(share[np.array(names) == n].mean()) for n in dict.fromkeys(names)}},
    }


def _padded(lists: pl.Series, width: int) -> np.ndarray:
    padded = lists.list.concat(pl.lit([False] * width, dtype=pl.List(pl.Boolean))).list.head(width)
    return np.stack(padded.to_numpy()).astype(bool) if len(padded) else np.zeros((0, width), dtype=bool)


def mlflow_metrics(report: dict, prefix: str = "test") -> dict:
    """``<prefix>/<merged|behavior>/<metric>_at_<k>``, the repeat / explore parts as
    ``<prefix>/<repeat|explore>/<merged|behavior>/<metric>_at_<k>`` and the history share as
    ``<prefix>/history_share/<merged|behavior>``, in kedro-mlflow's metrics format."""
    values = {}
    for group, metrics in {"merged": report["metrics"]["merged"], **report["metrics"]["by_behavior"]}.items():
        values |= {f"{prefix}/{group}/{name}": value for name, value in metrics.items()}
    for part, result in report.get("parts", {}).items():
        groups = {"merged": result["merged"], **result["by_behavior"]} if result["merged"] else {}
        for group, metrics in groups.items():
            values |= {f"{prefix}/{part}/{group}/{name}": value for name, value in metrics.items()}
    if "history_share" in report:
        share = report["history_share"]
        values |= {f"{prefix}/history_share/{g}": v for g, v in {"merged": share["merged"], **share["by_behavior"]}.items()}
    if report.get("behavior_accuracy") is not None:
        values[f"{prefix}/behavior_accuracy"] = report["behavior_accuracy"]
    return {key.replace("@", "_at_"): {"value": float(value), "step": 0} for key, value in values.items()}


def metrics_figure(report: dict, predictions: pl.DataFrame, behavior_names: list[str]) -> plt.Figure:
    """Left: each metric@k per behavior and merged (n = samples).  Right: NDCG@k on all targets, on the repeat
    targets and on the explore targets, per behavior and merged, with the share of history items in the lists."""
    values, counts = np.unique(predictions["behavior_idx"].to_numpy(), return_counts=True)
    counts = {behavior_names[b]: int(n) for b, n in zip(values, counts)}
    counts["merged"] = predictions.height
    groups = {**report["metrics"]["by_behavior"], "merged": report["metrics"]["merged"]}
    names = [n for n in next(iter(groups.values())) if not n.startswith("mrr")]
    fig, (ax, right) = plt.subplots(1, 2, figsize=(max(7, 1.1 * len(names) * len(groups) / 2) + 6, 4.5),
                                    constrained_layout=True, width_ratios=[2, 1])
    width = 0.8 / len(groups)
    x = np.arange(len(names))
    for i, (group, metrics) in enumerate(groups.items()):
        n = counts.get(group, 0)
        ax.bar(x + i * width, [metrics[m] for m in names], width, label=f"{group} (n={n})",
               color="#333333" if group == "merged" else None)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, names)
    ax.set_ylabel("score")
    tok = f" · {report['tokenizer']}" if report.get("tokenizer") else ""
    ax.set_title(f"{report['dataset']} · {report['model']}{tok} · {report['protocol']} ({report['n_test']} samples)")
    ax.legend(frameon=False, ncols=min(len(groups), 4))

    k = max(int(m.split("@")[1]) for m in names if m.startswith("ndcg"))
    metric = f"ndcg@{k}"
    columns = list(groups)
    parts = report.get("parts", {})
    width = 0.8 / 3
    x = np.arange(len(columns))
    for i, (part, color) in enumerate((("all", "#333333"), ("repeat", "#c44e52"), ("explore", "#4c72b0"))):
        if part == "all":
            heights, ns = [groups[c][metric] for c in columns], [counts.get(c, 0) for c in columns]
        else:
            result = parts.get(part) or {"merged": None, "by_behavior": {}, "n_samples": {}}
            by = {**result["by_behavior"], "merged": result["merged"]}
            heights = [(by.get(c) or {}).get(metric, 0.0) for c in columns]
            ns = [result["n_samples"].get(c, 0) for c in columns]
        bars = right.bar(x + (i - 1) * width, heights, width, color=color, label=f"{part} targets")
        right.bar_label(bars, labels=[f"n={n}" for n in ns], fontsize=7, rotation=90, padding=2)
    share = report.get("history_share", {})
    shares = {**share.get("by_behavior", {}), "merged": share.get("merged")}
    right.set_xticks(x, [f"{c}\nhist {shares[c]:.0%}" if shares.get(c) is not None else c for c in columns])
    right.set_ylabel(metric)
    right.set_title(f"{metric}: repeat vs explore targets (hist = history items in the lists)")
    right.legend(frameon=False, fontsize=8)
    right.margins(y=0.25)
    return fig


def report_run(predictions: pl.DataFrame, behavior_names: list[str], ks: list[int], run: dict,
               behavior_accuracy: float | None = None, prefix: str = "test"):
    """(metrics.json, plot, MLflow metrics) of one evaluated run, with a log line of its @10 metrics.
    ``run``: dataset, pipeline, model, tokenizer, protocol, n_items."""
    report = metrics_report(predictions, behavior_names=behavior_names, ks=ks, behavior_accuracy=behavior_accuracy,
                            **run)
    merged = report["metrics"]["merged"]
    log.info("%s on %s (%s, %d samples): %s", report["model"], report["dataset"], report["protocol"],
             report["n_test"], ", ".join(f"{k} {v:.4f}" for k, v in merged.items() if k.endswith("@10")))
    return report, metrics_figure(report, predictions, behavior_names), mlflow_metrics(report, prefix)
