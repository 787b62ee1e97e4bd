"""Project pipelines (SPEC §7)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, pipeline

from seqrec_pipeline.pipelines import discriminative
from seqrec_pipeline.pipelines import embedding, evaluation, ingestion, preprocessing, tokenization, training


def _with_protocol(pipe: Pipeline, protocol: str) -> Pipeline:
    """The same chain with its split protocol fixed (last_event for mb_decoder / decoder)."""
    return pipeline(pipe, parameters={"params:split.protocol": f"params:protocols.{protocol}"})


def register_pipelines() -> dict[str, Pipeline]:
    data = ingestion.create_pipeline() + preprocessing.create_pipeline()
    features = data + embedding.create_pipeline() + tokenization.create_pipeline()
    trained = features + training.create_pipeline()
    smb_decoder = trained + evaluation.create_pipeline("smb_decoder")
    return {
        "ingest": ingestion.create_pipeline(),
        # each stage pipeline brings what it needs from raw files, so one command works on a fresh clone;
        # `--namespaces=<stage>` runs only that stage's nodes on the stored upstream artifacts
        "preprocess": data,
        "embed": data + embedding.create_pipeline(),
        "tokenize": features,
        "train": trained,
        "evaluate": evaluation.create_pipeline("smb_decoder"),  # the stored model only
        "smb_decoder": smb_decoder,
        "mb_decoder": _with_protocol(trained + evaluation.create_pipeline("mb_decoder"), "last_event"),
        "decoder": _with_protocol(trained + evaluation.create_pipeline("decoder"), "last_event"),
        "smb_rule": data + evaluation.create_rule_pipeline(),
        "smb_rec": data + discriminative.create_pipeline(),
        "__default__": smb_decoder,
    }
