"""Preprocessing nodes: validated events -> integer sequences, id maps, splits, dataset report."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from seqrec_pipeline.data.preprocess import build_primary
from seqrec_pipeline.io.parquet import ParquetParts
from seqrec_pipeline.params import DataParams, validate
from seqrec_pipeline.reporting.dataset import build_report, report_figure, report_metrics
from seqrec_pipeline.dataset_spec import resolve_dataset


def build_sequences(events: pl.LazyFrame | ParquetParts, item_text: pl.DataFrame, behavior_levels: dict,
                    dataset: str, datasets: dict, data: dict, work_dir: Path):
    spec = resolve_dataset(dataset, datasets)
    settings = validate(DataParams, data, prefix="data.")
    events = events.scan() if isinstance(events, ParquetParts) else events  # handed over in memory, not saved
    primary = build_primary(events, behavior_levels, spec.filters, spec.session_gap_minutes, item_text,
                            bucket_events=settings.bucket_events, batch_rows=settings.batch_rows, work_dir=work_dir)
    return primary.sequences, primary.items, primary.users, primary.behaviors, primary.stats


def dataset_report(sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame, ingest_report: dict,
                   preprocess_stats: dict, dataset: str, data: dict):
    per_slice = validate(DataParams, data, prefix="data.").bucket_events
    report = build_report(dataset, sequences, items, behaviors, ingest_report, preprocess_stats, per_slice)
    return report, report_figure(report, sequences, items, per_slice), report_metrics(report)
