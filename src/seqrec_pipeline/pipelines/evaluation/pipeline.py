"""Ranking of the test samples, namespaced by the end-to-end pipeline it belongs to: ``<pipeline>.predictions``
(one ranked list per (user, behavior) sample), reported by the ``reporting`` pipeline under the same namespace.
Catalog factories place the outputs under ``data/0{7,8}_*/<dataset>/<pipeline>/<variant>/`` (variant =
``<model>-<tokenizer>``, or ``<model>`` for the baselines)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import decoder_behavior_accuracy, rank_decoder, rank_with_rule

RANK = ["params:split.protocol", "params:max_history", "params:eval"]


def create_pipeline(pipeline_name: str, **kwargs) -> Pipeline:
    decoder = ["decoder_model", "sequences", "behaviors", "sid_table", "sid_vocab", *RANK]
    nodes = [node(rank_decoder, decoder, "predictions", name="rank_decoder")]
    if pipeline_name == "mb_decoder":  # also let the model choose the behavior: next-behavior accuracy
        nodes.append(node(decoder_behavior_accuracy, decoder, "behavior_accuracy", name="behavior_accuracy"))
    return pipeline(nodes, namespace=pipeline_name,
                    inputs={"decoder_model", "sequences", "behaviors", "sid_table", "sid_vocab"},
                    parameters=set(RANK))


def create_rule_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(rank_with_rule, ["sequences", "items", "params:model", *RANK], "predictions", name="rank_rule")],
        namespace="smb_rule",
        inputs={"sequences", "items"},
        parameters={*RANK, "params:model"},
    )
