"""Compare every evaluated run of a dataset: one table from the metrics.json files in 08_reporting.

Each pipeline run writes ``data/08_reporting/<dataset>/<pipeline>/<variant>/metrics.json`` (SPEC §6); this
module gathers them into one table per split protocol (metrics of ``last_session`` and ``last_event`` runs
are not comparable), sorted by merged NDCG@k, with one column per behavior.  ``kedro compare`` prints it
and writes it as Markdown next to the runs; MLflow keeps the full history of every run.

Where a run's predictions table (07_model_output, with the targets) is there and reproduces its merged
NDCG@k, the table also gives how sure the numbers are: a 95 % interval half-width of the merged NDCG@k
(normal approximation over samples) and, for every run but the best of its protocol, the paired difference
to the best run over the same (user, behavior) samples with its 95 % interval.  Test sets of a few hundred
samples make differences of a few hundredths of NDCG noise; the paired interval says which ones are not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.metrics import per_sample_metrics

Z95 = 1.959964  # two-sided 95 % normal quantile
KEYS = ["user_idx", "behavior_idx"]


def _latest_predictions(model_output_dir: Path, dataset: str, pipeline: str, variant: str) -> Path | None:
    versions = sorted((model_output_dir / dataset / pipeline / variant / "predictions.parquet").glob(
        "*/predictions.parquet"))
    return versions[-1] if versions else None


def per_sample_ndcg(predictions: pl.DataFrame, k: int) -> pl.DataFrame:
    """``user_idx, behavior_idx, ndcg`` per sample of a predictions table (``items`` ranked, ``targets``)."""
    lists = predictions["items"]
    width = max(int(lists.list.len().max() or 0), 1)
    # ranked lists -> [n, width] in rank order, -1 for empty slots (pad_targets would sort them)
    items = lists.list.concat(pl.lit([-1] * width, dtype=pl.List(pl.Int64))).list.head(width)
    items = np.stack(items.to_numpy()) if len(items) else np.empty((0, width), dtype=np.int64)
    values = per_sample_metrics(items, predictions["targets"].to_list(), ks=(k,))[f"ndcg@{k}"]
    return predictions.select(KEYS).with_columns(ndcg=pl.Series(values))


def _interval(values: np.ndarray) -> float | None:
    """Half-width of the normal 95 % interval of the mean (None for fewer than two samples)."""
    return float(Z95 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def collect_metrics(reporting_dir: str | Path, dataset: str, k: int = 10,
                    model_output_dir: str | Path | None = None) -> pl.DataFrame:
    """One row per ``<dataset>/<pipeline>/<variant>/metrics.json`` under ``reporting_dir``.

    Columns: protocol, pipeline, variant, model, tokenizer, n_test, ``ndcg@k`` / ``hit@k`` (merged),
    ``±95%`` (interval half-width of the merged NDCG@k), ``Δ vs best`` / ``Δ ±95%`` (paired difference to
    the best run of the protocol), ``<behavior> ndcg@k`` per behavior, behavior_accuracy, measured (UTC time
    the file was written).  The interval columns are null where the predictions are missing, do not
    reproduce the merged NDCG@k (written by another run), or cover other samples than the best run's.
    ``model_output_dir`` defaults to ``07_model_output`` next to ``reporting_dir``.
    """
    model_output_dir = Path(model_output_dir) if model_output_dir else Path(reporting_dir).parent / "07_model_output"
    root = Path(reporting_dir) / dataset
    files = sorted(root.glob("*/*/metrics.json"))
    if not files:
        raise InputError(
            f"no metrics.json under {root}; evaluate a model first, e.g. "
            f"`kedro run --pipeline=smb_rule --params=\"dataset={dataset},model=recent\"`"
        )
    rows, behavior_lists, samples = [], [], []
    for path in files:
        report = json.loads(path.read_text())
        merged = report["metrics"]["merged"]
        if f"ndcg@{k}" not in merged:
            raise InputError(f"{path} has no ndcg@{k}; choose k among its cutoffs "
                             f"{sorted({int(m.split('@')[1]) for m in merged})}")
        row = {
            "protocol": report["protocol"],
            "pipeline": report["pipeline"],
            "variant": path.parent.name,
            "model": report["model"],
            "tokenizer": report["tokenizer"],
            "n_test": report["n_test"],
            f"ndcg@{k}": merged[f"ndcg@{k}"],
            f"hit@{k}": merged[f"hit@{k}"],
            "behavior_accuracy": report.get("behavior_accuracy"),
            "measured": datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).strftime("%Y-%m-%d %H:%M"),
        }
        for behavior, values in report["metrics"]["by_behavior"].items():
            row[f"{behavior} ndcg@{k}"] = values[f"ndcg@{k}"]
        behavior_lists.append(list(report["metrics"]["by_behavior"]))
        rows.append(row)
        samples.append(_samples(model_output_dir, dataset, report, path.parent.name, merged[f"ndcg@{k}"], k))
    # behavior columns in dataset order: that of the run with the most behaviors, then any others
    behaviors = list(dict.fromkeys(b for names in sorted(behavior_lists, key=len, reverse=True) for b in names))
    _paired_to_best(rows, samples, f"ndcg@{k}")
    columns = ["protocol", "pipeline", "variant", "model", "tokenizer", "n_test", f"ndcg@{k}", "±95%", "Δ vs best",
               "Δ ±95%", f"hit@{k}", *[f"{b} ndcg@{k}" for b in behaviors], "behavior_accuracy", "measured"]
    floats = ["±95%", "Δ vs best", "Δ ±95%", "behavior_accuracy", *[f"{b} ndcg@{k}" for b in behaviors]]
    frame = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows],
                         schema_overrides={"tokenizer": pl.Utf8, **{c: pl.Float64 for c in floats}})
    return frame.sort(["protocol", f"ndcg@{k}"], descending=[False, True])


def _samples(model_output_dir: Path, dataset: str, report: dict, variant: str, merged: float,
             k: int) -> pl.DataFrame | None:
    """Per-sample NDCG@k of a run, or None when its predictions are absent or belong to another run."""
    path = _latest_predictions(model_output_dir, dataset, report["pipeline"], variant)
    if path is None:
        return None
    table = per_sample_ndcg(pl.read_parquet(path, columns=[*KEYS, "items", "targets"]), k)
    if table.height != report["n_test"] or abs(float(table["ndcg"].mean()) - merged) > 1e-9:
        return None
    return table


def _paired_to_best(rows: list[dict], samples: list[pl.DataFrame | None], metric: str) -> None:
    """Fill the interval columns in place: per protocol, every run against the one with the best metric."""
    for protocol in {r["protocol"] for r in rows}:
        members = [i for i, r in enumerate(rows) if r["protocol"] == protocol]
        best = max(members, key=lambda i: rows[i][metric])
        for i in members:
            if samples[i] is None:
                continue
            rows[i]["±95%"] = _interval(samples[i]["ndcg"].to_numpy())
            if i == best or samples[best] is None:
                continue
            pair = samples[i].join(samples[best], on=KEYS, how="inner", suffix="_best")
            if pair.height != samples[i].height or pair.height != samples[best].height:
                continue  # other samples: no paired comparison
            diff = (pair["ndcg"] - pair["ndcg_best"]).to_numpy()
            rows[i]["Δ vs best"] = float(diff.mean())
            rows[i]["Δ ±95%"] = _interval(diff)


def markdown_tables(frame: pl.DataFrame, dataset: str) -> str:
    """One Markdown table per protocol, metrics to four decimals, missing values as '–'."""
    out = []
    for (protocol,), part in frame.group_by("protocol", maintain_order=True):
        part = part.drop("protocol")
        derived = [m if t is None else f"{m}-{t}" for m, t in zip(part["model"], part["tokenizer"])]
        if part["variant"].to_list() == derived:  # the directory name says nothing the columns don't
            part = part.drop("variant")
        part = part.drop([c for c in ("±95%", "Δ vs best", "Δ ±95%", "behavior_accuracy") if part[c].is_null().all()])
        header = "| " + " | ".join(part.columns) + " |"
        rule = "|" + "|".join("---:" if part[c].dtype.is_numeric() else "---" for c in part.columns) + "|"
        lines = [f"### {dataset} · {protocol} ({part.height} runs)", "", header, rule]
        for row in part.iter_rows():
            cells = ["–" if v is None else (f"{v:+.4f}" if c == "Δ vs best" else f"{v:.4f}") if isinstance(v, float)
                     else str(v) for c, v in zip(part.columns, row)]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def comparison_figure(frame: pl.DataFrame, dataset: str, k: int = 10):
    """Horizontal bars of the merged NDCG@k per run with its 95 % interval, one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")  # headless: written, never shown
    import matplotlib.pyplot as plt

    groups = [(protocol, part) for (protocol,), part in frame.group_by("protocol", maintain_order=True)]
    colors = {"smb_rule": "#8c8c8c", "smb_rec": "#4c72b0"}  # generative pipelines: red
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 0.42 * max(g.height for _, g in groups) + 1.6),
                             squeeze=False, constrained_layout=True)
    for ax, (protocol, part) in zip(axes[0], groups):
        part = part.reverse()  # best on top
        labels = [f"{m}" + (f" ({t})" if t else "") + f" · {p}" for m, t, p in
                  zip(part["model"], part["tokenizer"], part["pipeline"])]
        errors = part["±95%"].fill_null(0.0).to_numpy()
        ax.barh(labels, part[f"ndcg@{k}"].to_numpy(), xerr=errors, capsize=3,
                color=[colors.get(p, "#c44e52") for p in part["pipeline"]])
        ax.set_xlabel(f"merged NDCG@{k} (bars: 95 % interval over samples)")
        ax.set_title(f"{dataset} · {protocol} · {part['n_test'][0]:,} test samples")
        ax.grid(axis="x", alpha=0.3)
    return fig
