"""Project pipelines: each stage brings what it needs, so one command works on a fresh clone."""

from __future__ import annotations

from kedro.pipeline import Pipeline, pipeline

from seqrec_pipeline.pipelines import (
    discriminative,
    embedding,
    evaluation,
    ingestion,
    preprocessing,
    reporting,
    serving,
    tokenization,
    training,
)


def _with_protocol(pipe: Pipeline, protocol: str) -> Pipeline:
    """The same chain with its split protocol fixed (last_event for mb_decoder / decoder)."""
    return pipeline(pipe, parameters={"params:split.protocol": f"params:protocols.{protocol}"})


def _evaluated(name: str) -> Pipeline:
    """Ranking of the stored model's test samples and their report, under the namespace ``name``."""
    return evaluation.create_pipeline(name) + reporting.create_pipeline(
        name, generative=True, behavior_accuracy=name == "mb_decoder", repeat_aware=True)


def register_pipelines() -> dict[str, Pipeline]:
    data = ingestion.create_pipeline() + preprocessing.create_pipeline()
    features = data + embedding.create_pipeline() + tokenization.create_pipeline()
    trained = features + training.create_pipeline()
    # the training run also logs and registers its model (with the repeat head) as an MLflow model
    smb_decoder = trained + _evaluated("smb_decoder") + serving.create_package_pipeline("smb_decoder")
    return {
        "ingest": ingestion.create_pipeline(),
        # `--namespaces=<stage>` runs only that stage's nodes on the stored upstream artifacts
        "preprocess": data,
        "embed": data + embedding.create_pipeline(),
        "tokenize": features,
        "train": trained,
        "evaluate": _evaluated("smb_decoder"),  # the stored model only
        "smb_decoder": smb_decoder,
        "mb_decoder": _with_protocol(trained + _evaluated("mb_decoder"), "last_event"),
        "decoder": _with_protocol(trained + _evaluated("decoder"), "last_event"),
        "smb_rule": data + evaluation.create_rule_pipeline() + reporting.create_pipeline("smb_rule", generative=False)
        + serving.create_rule_package_pipeline(),
        "smb_rec": data + discriminative.create_pipeline() + evaluation.create_repeat_pipeline("smb_rec")
        + reporting.create_pipeline("smb_rec", generative=False, repeat_aware=True)
        + serving.create_rec_package_pipeline(),
        "recommend": serving.create_recommend_pipeline(),  # the stored model only
        "recommend_rec": serving.create_rec_recommend_pipeline(),  # the stored smb_rec model only
        "recommend_rule": serving.create_rule_recommend_pipeline(),  # the fitted item_knn rule only
        "compare": reporting.create_compare_pipeline(),
        "__default__": smb_decoder,
    }
