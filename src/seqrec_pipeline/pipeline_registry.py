"""Project pipelines (SPEC §7)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from seqrec_pipeline.pipelines import ingestion, preprocessing


def register_pipelines() -> dict[str, Pipeline]:
    ingest = ingestion.create_pipeline()
    preprocess = preprocessing.create_pipeline()
    return {
        "ingest": ingest,
        # `preprocess` includes ingestion so that one command goes from raw files to splits
        "preprocess": ingest + preprocess,
        "__default__": ingest + preprocess,
    }
