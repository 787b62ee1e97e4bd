"""smb_rec nodes: train a discriminative baseline on the stored split; rank the test samples with it."""

from __future__ import annotations

import logging

import mlflow
import polars as pl

from seqrec_pipeline.params import EvalParams, RecParams, RepeatParams, validate
from seqrec_pipeline.ranking import rank_discriminative
from seqrec_pipeline.reporting.evaluation import predictions_table
from seqrec_pipeline.splits import eval_set
from seqrec_pipeline.training.discriminative import train_recommender

log = logging.getLogger(__name__)


def _log_epoch(epoch: int, metrics: dict) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({f"epoch/{k}".replace("@", "_at_"): float(v) for k, v in metrics.items()}, step=epoch)


def train_rec(sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame, model: str, protocol: str,
              train_users: str, max_history: int, seed: int, rec: dict, eval_params: dict):
    net, summary = train_recommender(sequences, items.height, behaviors, model, protocol, max_history, seed,
                                     validate(RecParams, rec, prefix="rec."), train_users, on_epoch=_log_epoch,
                                     valid_users=validate(EvalParams, eval_params, prefix="eval.").valid_users)
    if mlflow.active_run() is not None:
        mlflow.log_params({"rec.n_parameters": summary["n_parameters"], "rec.best_epoch": summary["best_epoch"],
                           "rec.n_train_samples": summary["n_train_samples"]})
    return net, summary


def rank_rec(rec_model, sequences: pl.DataFrame, protocol: str, max_history: int, rec: dict, repeat: dict,
             eval_params: dict, *, split: str) -> pl.DataFrame:
    """The model's top candidates (as many as the repeat/explore mixture takes) for every sample of ``split``."""
    users = validate(EvalParams, eval_params, prefix="eval.").max_users(split)
    data = eval_set(sequences, protocol, split, max_history, max_users=users)
    ranking = rank_discriminative(rec_model, data, validate(RepeatParams, repeat, prefix="repeat.").candidates,
                                  validate(RecParams, rec, prefix="rec.").batch_size, max_history)
    return predictions_table(data, ranking)
