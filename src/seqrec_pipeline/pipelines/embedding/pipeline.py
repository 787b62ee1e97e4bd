from kedro.pipeline import Pipeline, node, pipeline

from .nodes import embed


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(embed, ["items", "sequences@lazy", "params:embed", "params:seed"],
              ["item_embeddings", "embedding_info", "embedding_metrics"], name="embed_items")],
        namespace="embed",
        inputs={"items", "sequences"},
        outputs={"item_embeddings", "embedding_info", "embedding_metrics"},
        parameters={"params:embed", "params:seed"},
    )
