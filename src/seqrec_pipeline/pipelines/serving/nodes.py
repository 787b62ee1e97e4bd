"""Serving nodes: the stored model -> recommendations for the log's users; the run's model -> an MLflow model."""

from __future__ import annotations

import logging

import mlflow
import polars as pl

from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.params import EmbedParams, EvalParams, RecommendParams, validate
from seqrec_pipeline.serving import build_recommender, recommend_users
from seqrec_pipeline.serving.pyfunc import input_example, log_model

log = logging.getLogger(__name__)


def _recommender(decoder_model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head, protocol,
                 max_history, eval_params, dataset, datasets, embed):
    params = validate(EvalParams, eval_params, prefix="eval.")
    return build_recommender(decoder_model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head,
                             protocol=protocol, max_history=max_history, beam_size=params.beam_size,
                             batch_size=params.batch_size, renormalize=params.renormalize,
                             temperature=params.temperature, device=params.device,
                             chunk_events=validate(EmbedParams, embed, prefix="embed.").cf_chunk_events,
                             session_gap_seconds=resolve_dataset(dataset, datasets).session_gap_minutes * 60.0)


def recommend(decoder_model, sequences: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame,
              behaviors: pl.DataFrame, sid_table: pl.DataFrame, sid_vocab: dict, repeat_head: dict | None,
              recommend_params: dict, protocol: str, max_history: int, eval_params: dict, dataset: str,
              datasets: dict, embed: dict):
    """Top-k raw item ids per (user, behavior) from each user's whole log; a summary and its MLflow metrics."""
    params = validate(RecommendParams, recommend_params, prefix="recommend.")
    recommender = _recommender(decoder_model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head,
                               protocol, max_history, eval_params, dataset, datasets, embed)
    table, summary = recommend_users(recommender, sequences, users, which=params.users, behaviors=params.behaviors,
                                     k=params.k, use_repeat=params.repeat,
                                     chunk_users=params.chunk_users)
    metrics = {f"recommend/{k}": {"value": float(summary[k]), "step": 0}
               for k in ("n_users", "n_unknown_users", "n_rows")}
    return table, summary, metrics


def package_model(decoder_model, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                  sid_table: pl.DataFrame, sid_vocab: dict, repeat_head: dict, protocol: str, max_history: int,
                  eval_params: dict, dataset: str, datasets: dict, embed: dict, model: str, tokenizer: str) -> dict:
    """The run's model with its repeat head as an MLflow model, registered as ``seqrec-<dataset>-<model>-<tokenizer>``
    (nothing is logged without an active MLflow run)."""
    recommender = _recommender(decoder_model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head,
                               protocol, max_history, eval_params, dataset, datasets, embed)
    if mlflow.active_run() is None:
        log.warning("no active MLflow run: the MLflow model is not logged")
        return {}
    info = log_model(recommender, f"seqrec-{dataset}-{model}-{tokenizer}", input_example(recommender, sequences))
    log.info("MLflow model registered as %s; serve it with: mlflow models serve -m %s --env-manager local "
             "-h 127.0.0.1 -p 5001", info["name"], info["registered_uri"])
    return info
