"""Reporting nodes: a predictions table -> metrics.json, plot, MLflow metrics; every run -> comparison."""

from __future__ import annotations

import polars as pl

from seqrec_pipeline.params import EvalParams, validate
from seqrec_pipeline.reporting.comparison import compare_runs
from seqrec_pipeline.reporting.evaluation import report_run
from seqrec_pipeline.splits import BehaviorTable


def report(predictions: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame, eval_params: dict, dataset: str,
           model: str, protocol: str, tokenizer: str | None = None, behavior_accuracy: dict | None = None, *,
           pipeline_name: str, variant: str | None = None):
    """metrics.json, plot and MLflow metrics of one evaluated run; ``variant="repeat"``: the model with its
    repeat / explore mixture (model ``<model>+repeat``, MLflow metrics under ``test_repeat/``)."""
    params = validate(EvalParams, eval_params, prefix="eval.")
    run = {"dataset": dataset, "pipeline": pipeline_name, "model": f"{model}+{variant}" if variant else model,
           "tokenizer": tokenizer, "protocol": protocol, "n_items": items.height}
    return report_run(predictions, list(BehaviorTable.from_table(behaviors).names), params.topk, run,
                      prefix=f"test_{variant}" if variant else "test", **(behavior_accuracy or {}))


def compare(runs: dict, predictions: dict, served: dict, dataset: str, k: int):
    """Every evaluated run of the dataset, with the MLflow model each served run registered: the Markdown tables and
    the chart."""
    return compare_runs(runs, predictions, dataset, k, served)
