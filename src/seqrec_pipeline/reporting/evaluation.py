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
from seqrec_pipeline.splits import EvalSet

log = logging.getLogger(__name__)


def predictions_table(data: EvalSet, ranking: Ranking) -> pl.DataFrame:
    """One row per sample: user, behavior, ranked items (and scores), targets and, per target, whether it
    repeats an item of the user's history (``splits``)."""
    table = pl.DataFrame({
        "user_idx": data.user_idx[data.sample_user].astype(np.int32),
        "behavior_idx": data.sample_behavior.astype(np.int8),
        "items": ranking.items.astype(np.int32).tolist(),
        "targets": [list(map(int, t)) for t in data.targets],
    })
    if ranking.scores is not None:
        table = table.with_columns(pl.Series("scores", np.nan_to_num(ranking.scores, neginf=-1e30).tolist()))
    return table.with_columns(pl.Series("repeat", data.repeat, dtype=pl.List(pl.Boolean)))


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
    m = metrics_by_behavior(ranked_items(predictions), predictions["targets"].to_list(),
                            predictions["behavior_idx"].to_numpy(), ks=ks, behavior_names=behavior_names)
    return {
        "dataset": dataset, "pipeline": pipeline, "model": model, "tokenizer": tokenizer, "protocol": protocol,
        "n_users": int(predictions["user_idx"].n_unique()), "n_items": int(n_items), "n_test": predictions.height,
        "metrics": {"merged": m["merged"], "by_behavior": m["by_behavior"]},
        "behavior_accuracy": behavior_accuracy,
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }


def mlflow_metrics(report: dict) -> dict:
    """``test/<merged|behavior>/<metric>_at_<k>`` in kedro-mlflow's metrics format."""
    out = {}
    groups = {"merged": report["metrics"]["merged"], **report["metrics"]["by_behavior"]}
    for group, values in groups.items():
        for name, value in values.items():
            out[f"test/{group}/{name.replace('@', '_at_')}"] = {"value": float(value), "step": 0}
    if report.get("behavior_accuracy") is not None:
        out["test/behavior_accuracy"] = {"value": float(report["behavior_accuracy"]), "step": 0}
    return out


def metrics_figure(report: dict, predictions: pl.DataFrame, behavior_names: list[str]) -> plt.Figure:
    """Grouped bars: each metric@k per behavior and merged (n = samples)."""
    values, counts = np.unique(predictions["behavior_idx"].to_numpy(), return_counts=True)
    counts = {behavior_names[b]: int(n) for b, n in zip(values, counts)}
    counts["merged"] = predictions.height
    groups = {**report["metrics"]["by_behavior"], "merged": report["metrics"]["merged"]}
    names = [n for n in next(iter(groups.values())) if not n.startswith("mrr")]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(names) * len(groups) / 2), 4.5), constrained_layout=True)
    width = 0.8 / len(groups)
    x = np.arange(len(names))
    for i, (group, values) in enumerate(groups.items()):
        n = counts.get(group, 0)
        ax.bar(x + i * width, [values[m] for m in names], width, label=f"{group} (n={n})",
               color="#333333" if group == "merged" else None)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, names)
    ax.set_ylabel("score")
    tok = f" · {report['tokenizer']}" if report.get("tokenizer") else ""
    ax.set_title(f"{report['dataset']} · {report['model']}{tok} · {report['protocol']} ({report['n_test']} samples)")
    ax.legend(frameon=False, ncols=min(len(groups), 4))
    return fig


def report_run(predictions: pl.DataFrame, behavior_names: list[str], ks: list[int], run: dict,
               behavior_accuracy: float | None = None):
    """(metrics.json, plot, MLflow metrics) of one evaluated run, with a log line of its @10 metrics.
    ``run``: dataset, pipeline, model, tokenizer, protocol, n_items."""
    report = metrics_report(predictions, behavior_names=behavior_names, ks=ks, behavior_accuracy=behavior_accuracy,
                            **run)
    merged = report["metrics"]["merged"]
    log.info("%s on %s (%s, %d samples): %s", report["model"], report["dataset"], report["protocol"],
             report["n_test"], ", ".join(f"{k} {v:.4f}" for k, v in merged.items() if k.endswith("@10")))
    return report, metrics_figure(report, predictions, behavior_names), mlflow_metrics(report)
