"""Ingestion nodes: raw files -> validated events, rejected rows, item text, behavior levels."""

from __future__ import annotations

from pathlib import Path

from seqrec_pipeline.data.ingest import ingest_events, ingest_stats
from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.io.fetch import fetch_raw_files
from seqrec_pipeline.io.parquet import ParquetParts
from seqrec_pipeline.io.readers import read_items
from seqrec_pipeline.io.workdir import spill_folder
from seqrec_pipeline.params import DataParams, validate


def fetch_raw(dataset: str, datasets: dict) -> dict:
    return fetch_raw_files(resolve_dataset(dataset, datasets))


def validate_raw_events(dataset: str, datasets: dict, data: dict, work_dir: Path, raw_manifest: dict):
    spec = resolve_dataset(dataset, datasets)
    settings = validate(DataParams, data, prefix="data.")
    events = ParquetParts(spill_folder(work_dir))  # batches go to disk as they are validated
    try:
        n_valid, rejected, levels = ingest_events(spec, settings.batch_rows, events)
    except BaseException:
        events.discard()
        raise
    stats = ingest_stats(n_valid, rejected) | {"raw": raw_manifest}
    metrics = {f"ingest/{k}": {"value": float(stats[k]), "step": 0} for k in ("n_raw", "n_valid", "n_rejected")}
    return events, rejected, read_items(spec), levels, stats, metrics
