from kedro.pipeline import Pipeline, node, pipeline

from .nodes import tokenize


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(tokenize,
              ["item_embeddings", "items", "behaviors", "params:tokenizer", "params:tokenizers", "params:seed",
               "params:dataset", "params:datasets"],
              ["sid_table", "sid_vocab", "sid_stats", "sid_metrics", "tokenizer_model"], name="build_sid_table")],
        namespace="tokenize",
        inputs={"item_embeddings", "items", "behaviors"},
        outputs={"sid_table", "sid_vocab", "sid_stats", "sid_metrics", "tokenizer_model"},
        parameters={"params:tokenizer", "params:tokenizers", "params:seed", "params:dataset", "params:datasets"},
    )
