from kedro.pipeline import Pipeline, node, pipeline

from .nodes import train_decoder


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(train_decoder,
              ["sequences", "behaviors", "sid_table", "sid_vocab", "params:model", "params:model_preset",
               "params:models", "params:split.protocol", "params:max_history", "params:augment", "params:train",
               "params:eval", "params:seed", "params:dataset", "params:tokenizer"],
              ["decoder_model", "train_summary"], name="train_decoder")],
        namespace="train",
        inputs={"sequences", "behaviors", "sid_table", "sid_vocab"},
        outputs={"decoder_model", "train_summary"},
        parameters={"params:model", "params:model_preset", "params:models", "params:split.protocol",
                    "params:max_history", "params:augment", "params:train", "params:eval", "params:seed",
                    "params:dataset", "params:tokenizer"},
    )
