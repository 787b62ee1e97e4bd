"""``recommend`` / ``recommend_rec`` / ``recommend_rule``: top-k raw item ids for the users of the log from the
stored decoder / discriminative baseline / fitted ``item_knn`` rule (no training); ``<pipeline>.served_model``: the
evaluated run's model logged and registered as an MLflow model."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import package_model, package_rec_model, package_rule_model, recommend, recommend_rec, recommend_rule

SETTINGS = ["params:split.protocol", "params:max_history", "params:eval", "params:dataset", "params:datasets",
            "params:embed"]
ARTIFACTS = ["decoder_model", "sequences@eager", "items", "behaviors", "sid_table", "sid_vocab"]
# a baseline ranks with `rec` / `repeat` instead of the decoder's `eval`
REC_SETTINGS = [p for p in SETTINGS if p != "params:eval"] + ["params:rec", "params:repeat"]
# the item_knn rule ranks with the settings it was fitted with
RULE_SETTINGS = [p for p in SETTINGS if p != "params:eval"]


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


def create_rec_recommend_pipeline(**kwargs) -> Pipeline:
    """``recommend`` for the stored ``smb_rec`` model of ``model`` (and its repeat head)."""
    return pipeline(
        [node(recommend_rec, ["rec_model", "sequences@eager", "users", "items", "behaviors", "repeat_head",
                              "params:recommend", *REC_SETTINGS], ["recommendations", "summary", "metrics"],
              name="recommend_rec")],
        namespace="recommend_rec",
        inputs={"rec_model": "smb_rec.rec_model", "sequences": "sequences", "users": "users", "items": "items",
                "behaviors": "behaviors"},
        parameters={"params:recommend", *REC_SETTINGS},
    )


def create_rec_package_pipeline(**kwargs) -> Pipeline:
    """After ``smb_rec.repeat_head``: the MLflow model of the run (``smb_rec.served_model``)."""
    return pipeline(
        [node(package_rec_model, ["rec_model", "sequences@eager", "items", "behaviors", "repeat_head", "params:model",
                                  *REC_SETTINGS], "served_model", name="package_model")],
        namespace="smb_rec",
        inputs={"sequences", "items", "behaviors"},
        parameters={*REC_SETTINGS, "params:model"},
    )


def create_rule_recommend_pipeline(**kwargs) -> Pipeline:
    """``recommend`` for the ``item_knn`` rule fitted by ``smb_rule``."""
    return pipeline(
        [node(recommend_rule, ["fitted", "sequences@eager", "users", "items", "behaviors", "params:recommend",
                               *RULE_SETTINGS], ["recommendations", "summary", "metrics"], name="recommend_rule")],
        namespace="recommend_rule",
        inputs={"sequences", "users", "items", "behaviors"},
        parameters={"params:recommend", *RULE_SETTINGS},
    )


def create_rule_package_pipeline(**kwargs) -> Pipeline:
    """After ``smb_rule.rank_rule``: the MLflow model of an ``item_knn`` run (``smb_rule.served_model``)."""
    return pipeline(
        [node(package_rule_model, ["fitted", "sequences@eager", "items", "behaviors", "params:model",
                                   *RULE_SETTINGS], "served_model", name="package_model")],
        namespace="smb_rule",
        inputs={"sequences", "items", "behaviors"},
        parameters={*RULE_SETTINGS, "params:model"},
    )
