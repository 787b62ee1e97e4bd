"""Ranking of the test samples, namespaced by the end-to-end pipeline it belongs to: ``<pipeline>.predictions``
(one ranked list per (user, behavior) sample), reported by the ``reporting`` pipeline under the same namespace.
Catalog factories place the outputs under ``data/0{7,8}_*/<dataset>/<pipeline>/<variant>/`` (variant =
``<model>-<tokenizer>``, or ``<model>`` for the baselines)."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    decoder_behavior_accuracy,
    fit_repeat_head,
    rank_decoder,
    rank_repeat_aware,
    rank_with_rule,
)

RANK = ["params:split.protocol", "params:max_history", "params:eval"]


def _on(split: str):
    return update_wrapper(partial(rank_decoder, split=split), rank_decoder)


def create_pipeline(pipeline_name: str, **kwargs) -> Pipeline:
    """Beam search on the test and the validation samples, then the repeat / explore mixture over it."""
    decoder = ["decoder_model", "sequences@eager", "behaviors", "sid_table", "sid_vocab", *RANK]
    nodes = [node(_on("test"), decoder, "predictions", name="rank_decoder"),
             node(_on("valid"), decoder, "validation_predictions", name="rank_decoder_validation")]
    if pipeline_name == "mb_decoder":  # also let the model choose the behavior: next-behavior accuracy
        nodes.append(node(decoder_behavior_accuracy, decoder, "behavior_accuracy", name="behavior_accuracy"))
    return pipeline(nodes, namespace=pipeline_name,
                    inputs={"decoder_model", "sequences", "behaviors", "sid_table", "sid_vocab"},
                    parameters=set(RANK)) + create_repeat_pipeline(pipeline_name)


def create_repeat_pipeline(namespace: str, **kwargs) -> Pipeline:
    """``<namespace>.validation_predictions`` -> ``repeat_head`` (fitted on the validation session);
    ``<namespace>.predictions`` + head -> ``repeat_predictions`` (any model with scores)."""
    return pipeline(
        [
            node(fit_repeat_head, ["validation_predictions", "sequences@eager", "items", "behaviors", *RANK,
                                   "params:repeat", "params:embed"], "repeat_head", name="fit_repeat_head"),
            node(rank_repeat_aware, ["predictions", "repeat_head", "sequences@eager", "behaviors", *RANK,
                                     "params:embed"], "repeat_predictions", name="rank_repeat_aware"),
        ],
        namespace=namespace,
        inputs={"sequences", "items", "behaviors"},
        parameters={*RANK, "params:repeat", "params:embed"},
    )


def create_rule_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(rank_with_rule, ["sequences@eager", "items", "behaviors", "params:model", *RANK, "params:repeat",
                               "params:embed"], ["predictions", "fitted"], name="rank_rule")],
        namespace="smb_rule",
        inputs={"sequences", "items", "behaviors"},
        parameters={*RANK, "params:model", "params:repeat", "params:embed"},
    )
