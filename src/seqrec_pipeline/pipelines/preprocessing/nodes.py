"""Preprocessing nodes: validated events -> integer sequences, id maps, splits, dataset report."""

from __future__ import annotations

import polars as pl

from seqrec_pipeline.data.preprocess import build_primary
from seqrec_pipeline.reporting.dataset import build_report, report_figure, report_metrics
from seqrec_pipeline.dataset_spec import resolve_dataset


def build_sequences(events: pl.DataFrame, item_text: pl.DataFrame, behavior_levels: dict, dataset: str,
                    datasets: dict):
    spec = resolve_dataset(dataset, datasets)
    primary = build_primary(events, behavior_levels, spec.filters, spec.session_gap_minutes, item_text)
    return primary.sequences, primary.items, primary.users, primary.behaviors, primary.stats


def dataset_report(sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame, ingest_report: dict,
                   preprocess_stats: dict, dataset: str):
    report = build_report(dataset, sequences, items, behaviors, ingest_report, preprocess_stats)
    return report, report_figure(report, sequences, items), report_metrics(report)
