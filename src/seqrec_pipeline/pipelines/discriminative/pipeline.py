"""smb_rec: discriminative baselines (SASRec, BERT4Rec, GRU4Rec, MBHT, MB-STR, PBAT) trained and evaluated on
the stored splits, with the same predictions / metrics / plot outputs as the generative pipelines.

Outputs ``smb_rec.<rec_model|rec_summary|predictions>`` (reported by the ``reporting`` pipeline); the catalog places
them under ``data/0{6,7,8}_*/<dataset>/.../<model>/`` (variant = ``<model>``, no tokenizer).
"""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import rank_rec, train_rec

TRAIN = ["params:model", "params:split.protocol", "params:max_history", "params:seed", "params:rec"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(train_rec, ["sequences", "items", "behaviors", *TRAIN], ["rec_model", "rec_summary"],
                 name="train_rec"),
            node(rank_rec, ["rec_model", "sequences", "params:split.protocol", "params:max_history", "params:eval",
                            "params:rec"], "predictions", name="rank_rec"),
        ],
        namespace="smb_rec",
        inputs={"sequences", "items", "behaviors"},
        parameters={*TRAIN, "params:eval"},
    )
