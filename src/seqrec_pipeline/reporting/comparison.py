"""Compare every evaluated run of a dataset: one table per split protocol, best merged NDCG@k first.

Each evaluation writes ``metrics.json`` and a predictions table per ``<pipeline>/<variant>``; the catalog hands
all of a dataset's to :func:`compare_runs` (``evaluated_runs`` / ``evaluated_predictions``, partitioned
datasets).  Metrics of ``last_session`` and ``last_event`` runs are not comparable, hence one table per
protocol, with one column per behavior.  ``kedro compare`` prints it; MLflow keeps the history of every run.

Where a run's latest predictions table reproduces its merged NDCG@k, the table also gives how sure the
numbers are: a 95 % interval half-width of the merged NDCG@k (normal approximation over samples) and, for
every run but the best of its protocol, the paired difference to the best run over the same (user, behavior)
samples with its 95 % interval.  Test sets of a few hundred samples make differences of a few hundredths of
NDCG noise; the paired interval says which ones are not.  A run whose files cannot be read is skipped with a
warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.ranking.metrics import per_sample_metrics

log = logging.getLogger(__name__)

Z95 = 1.959964  # two-sided 95 % normal quantile
KEYS = ["user_idx", "behavior_idx"]


def _load(value: Any) -> Any:
    return value() if callable(value) else value


def latest_predictions(predictions: Mapping[str, Any]) -> dict[str, Any]:
    """``<run folder>`` -> the loader of its newest predictions version, from partition ids
    ``<run folder>/predictions.parquet/<version>/``; the run folder is ``<pipeline>/<variant>`` for the decoder
    pipelines and ``<pipeline>/<protocol>/<variant>`` for the baselines, as for the run's metrics.json."""
    latest: dict[str, tuple[str, Any]] = {}
    for partition, loader in predictions.items():
        parts = partition.strip("/").split("/")
        if "predictions.parquet" not in parts[2:]:  # not e.g. validation_predictions.parquet
            continue
        at = parts.index("predictions.parquet")
        key, version = "/".join(parts[:at]), "/".join(parts[at:])
        if key not in latest or version > latest[key][0]:
            latest[key] = (version, loader)
    return {key: loader for key, (_, loader) in latest.items()}


def per_sample_ndcg(predictions: pl.DataFrame, k: int) -> pl.DataFrame:
    """``user_idx, behavior_idx, ndcg`` per sample of a predictions table (``items`` ranked, ``targets``)."""
    from seqrec_pipeline.reporting.evaluation import ranked_items

    values = per_sample_metrics(ranked_items(predictions), predictions["targets"].to_list(), ks=(k,))[f"ndcg@{k}"]
    return predictions.select(KEYS).with_columns(ndcg=pl.Series(values))


def _interval(values: np.ndarray) -> float | None:
    """Half-width of the normal 95 % interval of the mean (None for fewer than two samples)."""
    return float(Z95 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def served_uris(served: Mapping[str, Any] | None) -> dict[str, str]:
    """``<run folder>`` -> the ``models:/<name>/<version>`` URI its run registered (``served``: run folder -> its
    served_model.json or a loader of it; ``{}``, e.g. a rule that is not packaged, and unreadable files give none)."""
    out = {}
    for partition, value in (served or {}).items():
        try:
            uri = (_load(value) or {}).get("registered_uri")
        except Exception as exc:
            log.warning("run %s: its served_model.json cannot be read (%s)", partition.strip("/"), exc)
            continue
        if uri:
            out[partition.strip("/")] = uri
    return out


def collect_metrics(runs: Mapping[str, Any], predictions: Mapping[str, Any], k: int = 10,
                    served: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """One row per evaluated run (``runs``: ``<pipeline>/<variant>`` -> its metrics.json or a loader of it).

    Columns: protocol, pipeline, variant, model, tokenizer, n_test, ``ndcg@k`` / ``hit@k`` (merged),
    ``±95%`` (interval half-width of the merged NDCG@k), ``Δ vs best`` / ``Δ ±95%`` (paired difference to
    the best run of the protocol), ``repeat ndcg@k`` / ``explore ndcg@k`` (merged NDCG@k on the repeat / explore
    targets), ``hist share`` (share of history items in the top-k lists), ``<behavior> ndcg@k`` per behavior,
    behavior_accuracy, measured (UTC time of the evaluation), served (the registered MLflow model of the run
    folder, from ``served``: what to deploy).  The interval columns are null where the predictions are missing, do
    not reproduce the merged NDCG@k (written by another run), or cover other samples than the best run's.
    """
    newest, uris = latest_predictions(predictions), served_uris(served)
    rows, behavior_lists, samples = [], [], []
    for partition in sorted(runs):
        key = partition.strip("/")
        try:
            report = _load(runs[partition])
            merged = report["metrics"]["merged"]
            value = merged[f"ndcg@{k}"]
            if not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"ndcg@{k} is {value!r}")
            row = {
                "protocol": report["protocol"], "pipeline": report["pipeline"], "variant": key.split("/")[-1],
                "model": report["model"], "tokenizer": report["tokenizer"], "n_test": report["n_test"],
                f"ndcg@{k}": value, f"hit@{k}": merged[f"hit@{k}"],
                "behavior_accuracy": report.get("behavior_accuracy"), "measured": report.get("measured"),
                "served": uris.get(key),
            }
            for part in ("repeat", "explore"):
                result = (report.get("parts") or {}).get(part) or {}
                row[f"{part} ndcg@{k}"] = (result.get("merged") or {}).get(f"ndcg@{k}")
            row["hist share"] = (report.get("history_share") or {}).get("merged")
            for behavior, values in report["metrics"]["by_behavior"].items():
                row[f"{behavior} ndcg@{k}"] = values[f"ndcg@{k}"]
        except KeyError as exc:
            if str(exc).strip("'") == f"ndcg@{k}" and "merged" in locals():
                cutoffs = sorted({int(m.split("@")[1]) for m in merged})
                raise InputError(f"run {key} has no ndcg@{k}; choose k among its cutoffs {cutoffs}") from None
            log.warning("skipping run %s: its metrics.json lacks %s", key, exc)
            continue
        except Exception as exc:  # an unreadable file must not hide the other runs
            log.warning("skipping run %s: its metrics.json cannot be read (%s)", key, exc)
            continue
        behavior_lists.append(list(report["metrics"]["by_behavior"]))
        rows.append(row)
        samples.append(_samples(newest.get(key), report, key, value, k))
    if not rows:
        raise InputError("no readable evaluated run for this dataset; evaluate a model first, e.g. "
                         "`kedro run --pipeline=smb_rule --params=\"model=recent\"`")
    # behavior columns in dataset order: that of the run with the most behaviors, then any others
    behaviors = list(dict.fromkeys(b for names in sorted(behavior_lists, key=len, reverse=True) for b in names))
    _paired_to_best(rows, samples, f"ndcg@{k}")
    parts = [f"repeat ndcg@{k}", f"explore ndcg@{k}", "hist share"]
    columns = ["protocol", "pipeline", "variant", "model", "tokenizer", "n_test", f"ndcg@{k}", "±95%", "Δ vs best",
               "Δ ±95%", f"hit@{k}", *parts, *[f"{b} ndcg@{k}" for b in behaviors], "behavior_accuracy", "measured",
               "served"]
    floats = ["±95%", "Δ vs best", "Δ ±95%", "behavior_accuracy", *parts, *[f"{b} ndcg@{k}" for b in behaviors]]
    frame = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows],
                         schema_overrides={"tokenizer": pl.Utf8, "measured": pl.Utf8, "served": pl.Utf8,
                                           **{c: pl.Float64 for c in floats}})
    return frame.sort(["protocol", f"ndcg@{k}"], descending=[False, True])


def _samples(loader: Any, report: dict, key: str, merged: float, k: int) -> pl.DataFrame | None:
    """Per-sample NDCG@k of a run, or None when its predictions are absent or belong to another run."""
    if loader is None:
        return None
    try:
        table = per_sample_ndcg(_load(loader).select([*KEYS, "items", "targets"]), k)
    except Exception as exc:
        log.warning("run %s: its predictions cannot be read (%s); no interval for it", key, exc)
        return None
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
        optional = ("±95%", "Δ vs best", "Δ ±95%", "behavior_accuracy", "served",
                    *(c for c in part.columns if " ndcg@" in c or c == "hist share"))
        part = part.drop([c for c in dict.fromkeys(optional) if c in part.columns and part[c].is_null().all()])
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


def compare_runs(runs: Mapping[str, Any], predictions: Mapping[str, Any], dataset: str, k: int = 10,
                 served: Mapping[str, Any] | None = None):
    """(Markdown tables, chart) of every evaluated run of ``dataset`` (``served``: :func:`collect_metrics`)."""
    frame = collect_metrics(runs, predictions, k, served)
    return markdown_tables(frame, dataset), comparison_figure(frame, dataset, k)
