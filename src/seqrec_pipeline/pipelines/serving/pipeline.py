"""``recommend``: top-k raw item ids for the users of the log from the stored model (no training);
``<pipeline>.served_model``: the evaluated run's model logged and registered as an MLflow model."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import package_model, recommend

SETTINGS = ["params:split.protocol", "params:max_history", "params:eval", "params:dataset", "params:datasets",
            "params:embed"]
ARTIFACTS = ["decoder_model", "sequences@eager", "items", "behaviors", "sid_table", "sid_vocab"]


def create_recommend_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(recommend, ["decoder_model", "sequences@eager", "users", "items", "behaviors", "sid_table", "sid_vocab",
                          "repeat_head", "params:recommend", *SETTINGS], ["recommendations", "summary", "metrics"],
              name="recommend")],
        namespace="recommend",
        inputs={"decoder_model", "sequences", "users", "items", "behaviors", "sid_table", "sid_vocab"},
        parameters={"params:recommend", *SETTINGS},
    )


def create_package_pipeline(namespace: str, **kwargs) -> Pipeline:
    """After ``<namespace>.repeat_head``: the MLflow model of the run (``<namespace>.served_model``)."""
    return pipeline(
        [node(package_model, [*ARTIFACTS, "repeat_head", *SETTINGS, "params:model", "params:tokenizer"],
              "served_model", name="package_model")],
        namespace=namespace,
        inputs=set(ARTIFACTS),
        parameters={*SETTINGS, "params:model", "params:tokenizer"},
    )
