"""Evaluation pipelines, namespaced by the end-to-end pipeline they belong to.

Outputs are ``<pipeline>.metrics`` etc.; catalog factories place them under
``data/08_reporting/<dataset>/<pipeline>/<variant>/`` (variant = ``<model>-<tokenizer>``, or ``<model>`` for rules).
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import evaluate_decoder, evaluate_rule

OUTPUTS = ["metrics", "predictions", "metrics_plot", "test_metrics"]
DATA = ["sequences", "items", "behaviors"]
PARAMS = ["params:split.protocol", "params:max_history", "params:eval", "params:dataset", "params:model"]


def _named(func, **kwargs):
    return update_wrapper(partial(func, **kwargs), func)


def create_pipeline(pipeline_name: str, **kwargs) -> Pipeline:
    return pipeline(
        [node(_named(evaluate_decoder, pipeline_name=pipeline_name),
              ["decoder_model", *DATA, "sid_table", "sid_vocab", *PARAMS, "params:tokenizer"],
              OUTPUTS, name="evaluate_decoder")],
        namespace=pipeline_name,
        inputs={"decoder_model", *DATA, "sid_table", "sid_vocab"},
        parameters={*PARAMS, "params:tokenizer"},
    )


def create_rule_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(evaluate_rule, [*DATA, *PARAMS], OUTPUTS, name="evaluate_rule")],
        namespace="smb_rule",
        inputs=set(DATA),
        parameters=set(PARAMS),
    )
