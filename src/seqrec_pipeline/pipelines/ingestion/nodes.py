"""Ingestion nodes: raw files -> validated events, rejected rows, item text, behavior levels."""

from __future__ import annotations

from seqrec_pipeline.data.ingest import ingest_events, ingest_stats
from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.io.fetch import fetch_raw_files
from seqrec_pipeline.io.readers import read_items


def fetch_raw(dataset: str, datasets: dict) -> dict:
    return fetch_raw_files(resolve_dataset(dataset, datasets))


def validate_raw_events(dataset: str, datasets: dict, raw_manifest: dict):
    spec = resolve_dataset(dataset, datasets)
    events, rejected, levels = ingest_events(spec)
    stats = ingest_stats(events, rejected) | {"raw": raw_manifest}
    metrics = {f"ingest/{k}": {"value": float(stats[k]), "step": 0} for k in ("n_raw", "n_valid", "n_rejected")}
    return events, rejected, read_items(spec), levels, stats, metrics


