"""Serving nodes: the stored model -> recommendations for the log's users; the run's model -> an MLflow model.
One pair per kind of ranker: a decoder (``smb_decoder``), a discriminative baseline (``smb_rec``) and the
``item_knn`` rule (``smb_rule``)."""

from __future__ import annotations

import logging

import mlflow
import polars as pl

from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import EmbedParams, EvalParams, RecommendParams, RecParams, RepeatParams, validate
from seqrec_pipeline.ranking.rules import ITEM_KNN_BLOCK, ItemKnn
from seqrec_pipeline.serving import build_recommender, recommend_users
from seqrec_pipeline.serving.pyfunc import input_example, log_model
from seqrec_pipeline.splits import events_before

log = logging.getLogger(__name__)


def _recommender(model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head, protocol, max_history,
                 dataset, datasets, embed, **ranking):
    """``serving.build_recommender`` with the run's data settings; ``ranking``: how the model ranks (``beam_size``,
    ``batch_size``, ``renormalize``, ``temperature``, ``device``), from :func:`_decoding` or :func:`_candidates`."""
    return build_recommender(model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head,
                             protocol=protocol, max_history=max_history, **ranking,
                             chunk_events=validate(EmbedParams, embed, prefix="embed.").cf_chunk_events,
                             session_gap_seconds=resolve_dataset(dataset, datasets).session_gap_minutes * 60.0)


def _decoding(eval_params: dict) -> dict:
    """A decoder ranks as its evaluation decodes (``eval``)."""
    params = validate(EvalParams, eval_params, prefix="eval.")
    return dict(beam_size=params.beam_size, batch_size=params.batch_size, renormalize=params.renormalize,
                temperature=params.temperature, device=params.device)


def _candidates(rec: dict, repeat: dict) -> dict:
    """A discriminative baseline ranks as ``smb_rec`` does: its top ``repeat.candidates`` items of the catalog."""
    params = validate(RecParams, rec, prefix="rec.")
    return dict(beam_size=validate(RepeatParams, repeat, prefix="repeat.").candidates, batch_size=params.batch_size,
                renormalize=False, temperature=None, device=params.device)


def _item_knn(fitted: dict | None, sequences: pl.DataFrame, items: pl.DataFrame, protocol: str,
              embed: dict) -> tuple[ItemKnn, dict]:
    """The ``item_knn`` rule's explorer with the settings its ``smb_rule`` run fitted with, counted on every event
    of the log (as a decoder's count experts are), and how it ranks: its candidates, ``ITEM_KNN_BLOCK`` queries at
    a time."""
    if not fitted or "explorer" not in fitted:
        raise InputError("no fitted item_knn rule for this dataset and split: run `kedro run --pipeline=smb_rule "
                         "--params=\"model=item_knn\"` first, with the same dataset and split.protocol parameters")
    knn = ItemKnn.fit(events_before(sequences, protocol, None), items.height, **fitted["explorer"],
                      chunk_events=validate(EmbedParams, embed, prefix="embed.").cf_chunk_events)
    return knn, dict(beam_size=knn.width, batch_size=ITEM_KNN_BLOCK, renormalize=False, temperature=None)


def _recommend(recommender, sequences: pl.DataFrame, users: pl.DataFrame, recommend_params: dict):
    params = validate(RecommendParams, recommend_params, prefix="recommend.")
    table, summary = recommend_users(recommender, sequences, users, which=params.users, behaviors=params.behaviors,
                                     k=params.k, use_repeat=params.repeat,
                                     chunk_users=params.chunk_users)
    metrics = {f"recommend/{k}": {"value": float(summary[k]), "step": 0}
               for k in ("n_users", "n_unknown_users", "n_rows")}
    return table, summary, metrics


def _package(recommender, sequences: pl.DataFrame, dataset: str, protocol: str, name: str) -> dict:
    if mlflow.active_run() is None:
        log.warning("no active MLflow run: the MLflow model is not logged")
        return {}
    info = log_model(recommender, name, input_example(recommender, sequences),
                     tags={"dataset": dataset, "split.protocol": protocol})
    log.info("MLflow model registered as %s; serve it with: mlflow models serve -m %s --env-manager local "
             "-h 127.0.0.1 -p 5001", info["name"], info["registered_uri"])
    return info


def recommend(decoder_model, sequences: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame,
              behaviors: pl.DataFrame, sid_table: pl.DataFrame, sid_vocab: dict, repeat_head: dict | None,
              recommend_params: dict, protocol: str, max_history: int, eval_params: dict, dataset: str,
              datasets: dict, embed: dict):
    """Top-k raw item ids per (user, behavior) from each user's whole log; a summary and its MLflow metrics."""
    recommender = _recommender(decoder_model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head,
                               protocol, max_history, dataset, datasets, embed, **_decoding(eval_params))
    return _recommend(recommender, sequences, users, recommend_params)


def recommend_rec(rec_model, sequences: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame,
                  behaviors: pl.DataFrame, repeat_head: dict | None, recommend_params: dict, protocol: str,
                  max_history: int, dataset: str, datasets: dict, embed: dict, rec: dict, repeat: dict):
    """``recommend`` for a discriminative baseline of ``smb_rec``."""
    recommender = _recommender(rec_model, sequences, items, behaviors, None, None, repeat_head, protocol,
                               max_history, dataset, datasets, embed, **_candidates(rec, repeat))
    return _recommend(recommender, sequences, users, recommend_params)


def recommend_rule(fitted: dict | None, sequences: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame,
                   behaviors: pl.DataFrame, recommend_params: dict, protocol: str, max_history: int, dataset: str,
                   datasets: dict, embed: dict):
    """``recommend`` for the ``item_knn`` rule of ``smb_rule`` (its fitted mixture over its co-occurring items)."""
    knn, ranking = _item_knn(fitted, sequences, items, protocol, embed)
    recommender = _recommender(knn, sequences, items, behaviors, None, None, fitted, protocol, max_history, dataset,
                               datasets, embed, **ranking)
    return _recommend(recommender, sequences, users, recommend_params)


def package_model(decoder_model, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                  sid_table: pl.DataFrame, sid_vocab: dict, repeat_head: dict, protocol: str, max_history: int,
                  eval_params: dict, dataset: str, datasets: dict, embed: dict, model: str, tokenizer: str) -> dict:
    """The run's model with its repeat head as an MLflow model, registered as ``seqrec-<dataset>-<model>-<tokenizer>``
    (nothing is logged without an active MLflow run)."""
    recommender = _recommender(decoder_model, sequences, items, behaviors, sid_table, sid_vocab, repeat_head,
                               protocol, max_history, dataset, datasets, embed, **_decoding(eval_params))
    return _package(recommender, sequences, dataset, protocol, f"seqrec-{dataset}-{model}-{tokenizer}")


def package_rec_model(rec_model, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                      repeat_head: dict, model: str, protocol: str, max_history: int, dataset: str,
                      datasets: dict, embed: dict, rec: dict, repeat: dict) -> dict:
    """``package_model`` for a discriminative baseline of ``smb_rec``, registered as ``seqrec-<dataset>-<model>``."""
    recommender = _recommender(rec_model, sequences, items, behaviors, None, None, repeat_head, protocol,
                               max_history, dataset, datasets, embed, **_candidates(rec, repeat))
    return _package(recommender, sequences, dataset, protocol, f"seqrec-{dataset}-{model}")


def package_rule_model(fitted: dict, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                       model: str, protocol: str, max_history: int, dataset: str, datasets: dict,
                       embed: dict) -> dict:
    """``package_model`` for the ``item_knn`` rule of ``smb_rule``, registered as ``seqrec-<dataset>-item_knn``; the
    other rules are not packaged (``{}``)."""
    if model != "item_knn":
        log.info("the %s rule is not packaged as an MLflow model (only item_knn is)", model)
        return {}
    knn, ranking = _item_knn(fitted, sequences, items, protocol, embed)
    recommender = _recommender(knn, sequences, items, behaviors, None, None, fitted, protocol, max_history, dataset,
                               datasets, embed, **ranking)
    return _package(recommender, sequences, dataset, protocol, f"seqrec-{dataset}-{model}")
