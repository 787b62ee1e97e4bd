from kedro.pipeline import Pipeline, node, pipeline

from .nodes import train_decoder, training_settings

SETTINGS = ["params:model", "params:model_preset", "params:models", "params:split.protocol", "params:split.train_users", "params:max_history",
            "params:augment", "params:train", "params:eval", "params:seed"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(training_settings, SETTINGS, "training_settings", name="training_settings"),
            node(train_decoder, ["sequences@eager", "behaviors", "sid_table", "sid_vocab", "training_settings",
                                 "work_dir"], ["decoder_model", "train_summary"], name="train_decoder"),
        ],
        namespace="train",
        inputs={"sequences", "behaviors", "sid_table", "sid_vocab"},
        outputs={"decoder_model", "train_summary"},
        parameters=set(SETTINGS),
    )
