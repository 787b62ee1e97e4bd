"""smb_rec: discriminative baselines (SASRec, BERT4Rec, GRU4Rec, MBHT, MB-STR, PBAT) trained and evaluated on
the stored splits, with the same metrics / predictions / plot outputs as the generative pipelines.

Outputs ``smb_rec.<metrics|predictions|metrics_plot|test_metrics|rec_model>``; the catalog places them under
``data/0{6,7,8}_*/<dataset>/.../<model>/`` (variant = ``<model>``, no tokenizer).
"""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import train_and_evaluate_discriminative

OUTPUTS = ["metrics", "predictions", "metrics_plot", "test_metrics", "rec_model"]
DATA = ["sequences", "items", "behaviors"]
PARAMS = ["params:split.protocol", "params:max_history", "params:eval", "params:dataset", "params:model",
          "params:seed", "params:rec"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(train_and_evaluate_discriminative, [*DATA, *PARAMS], OUTPUTS, name="train_and_evaluate_discriminative")],
        namespace="smb_rec",
        inputs=set(DATA),
        parameters=set(PARAMS),
    )
