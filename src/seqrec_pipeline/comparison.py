"""Compare every evaluated run of a dataset: one table from the metrics.json files in 08_reporting.

Each pipeline run writes ``data/08_reporting/<dataset>/<pipeline>/<variant>/metrics.json`` (SPEC §6); this
module gathers them into one table per split protocol (metrics of ``last_session`` and ``last_event`` runs
are not comparable), sorted by merged NDCG@k, with one column per behavior.  ``kedro compare`` prints it
and writes it as Markdown next to the runs; MLflow keeps the full history of every run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from seqrec_pipeline.errors import InputError


def collect_metrics(reporting_dir: str | Path, dataset: str, k: int = 10) -> pl.DataFrame:
    """One row per ``<dataset>/<pipeline>/<variant>/metrics.json`` under ``reporting_dir``.

    Columns: protocol, pipeline, variant, model, tokenizer, n_test, ``ndcg@k`` / ``hit@k`` (merged),
    ``<behavior> ndcg@k`` per behavior, behavior_accuracy, measured (UTC time the file was written).
    """
    root = Path(reporting_dir) / dataset
    files = sorted(root.glob("*/*/metrics.json"))
    if not files:
        raise InputError(
            f"no metrics.json under {root}; evaluate a model first, e.g. "
            f"`kedro run --pipeline=smb_rule --params=\"dataset={dataset},model=recent\"`"
        )
    rows, behavior_lists = [], []
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
    # behavior columns in dataset order: that of the run with the most behaviors, then any others
    behaviors = list(dict.fromkeys(b for names in sorted(behavior_lists, key=len, reverse=True) for b in names))
    columns = ["protocol", "pipeline", "variant", "model", "tokenizer", "n_test", f"ndcg@{k}", f"hit@{k}",
               *[f"{b} ndcg@{k}" for b in behaviors], "behavior_accuracy", "measured"]
    frame = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema_overrides={
        "tokenizer": pl.Utf8, "behavior_accuracy": pl.Float64, **{f"{b} ndcg@{k}": pl.Float64 for b in behaviors}})
    return frame.sort(["protocol", f"ndcg@{k}"], descending=[False, True])


def markdown_tables(frame: pl.DataFrame, dataset: str) -> str:
    """One Markdown table per protocol, metrics to four decimals, missing values as '–'."""
    out = []
    for (protocol,), part in frame.group_by("protocol", maintain_order=True):
        part = part.drop("protocol")
        derived = [m if t is None else f"{m}-{t}" for m, t in zip(part["model"], part["tokenizer"])]
        if part["variant"].to_list() == derived:  # the directory name says nothing the columns don't
            part = part.drop("variant")
        if part["behavior_accuracy"].is_null().all():
            part = part.drop("behavior_accuracy")
        header = "| " + " | ".join(part.columns) + " |"
        rule = "|" + "|".join("---:" if part[c].dtype.is_numeric() else "---" for c in part.columns) + "|"
        lines = [f"### {dataset} · {protocol} ({part.height} runs)", "", header, rule]
        for row in part.iter_rows():
            cells = ["–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
