"""Project pipelines (SPEC §7)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from seqrec_pipeline.pipelines import embedding, ingestion, preprocessing, tokenization


def register_pipelines() -> dict[str, Pipeline]:
    ingest = ingestion.create_pipeline()
    preprocess = preprocessing.create_pipeline()
    embed = embedding.create_pipeline()
    tokenize = tokenization.create_pipeline()
    data = ingest + preprocess
    return {
        "ingest": ingest,
        # each stage pipeline brings what it needs from raw files, so one command works on a fresh clone;
        # `--namespaces=<stage>` runs only that stage's nodes on the stored upstream artifacts
        "preprocess": data,
        "embed": data + embed,
        "tokenize": data + embed + tokenize,
        "__default__": data,
    }
