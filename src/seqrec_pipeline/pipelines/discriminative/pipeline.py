"""smb_rec: discriminative baselines (SASRec, BERT4Rec, GRU4Rec, MBHT, MB-STR, PBAT) trained and evaluated on
the stored splits, with the same predictions / metrics / plot outputs as the generative pipelines.

Outputs ``smb_rec.<rec_model|rec_summary|predictions>`` (reported by the ``reporting`` pipeline); the catalog places
them under ``data/0{6,7,8}_*/<dataset>/.../<model>/`` (variant = ``<model>``, no tokenizer).
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import rank_rec, train_rec

TRAIN = ["params:model", "params:split.protocol", "params:split.train_users", "params:max_history", "params:seed",
         "params:rec", "params:eval"]
RANK = ["rec_model", "sequences@eager", "params:split.protocol", "params:max_history", "params:rec", "params:repeat",
        "params:eval"]


def _on(split: str):
    return update_wrapper(partial(rank_rec, split=split), rank_rec)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(train_rec, ["sequences@eager", "items", "behaviors", *TRAIN], ["rec_model", "rec_summary"],
                 name="train_rec"),
            node(_on("test"), RANK, "predictions", name="rank_rec"),
            node(_on("valid"), RANK, "validation_predictions", name="rank_rec_validation"),
        ],
        namespace="smb_rec",
        inputs={"sequences", "items", "behaviors"},
        parameters={*TRAIN, "params:repeat"},
    )
