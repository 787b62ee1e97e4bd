"""Evaluation nodes: rank the test samples (beam search or a rule) into a predictions table; report it."""

from __future__ import annotations

import logging

import polars as pl

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import EmbedParams, EvalParams, RepeatParams, validate
from seqrec_pipeline.ranking import next_behavior_accuracy, rank_generative
from seqrec_pipeline.ranking.rules import rule_ranking
from seqrec_pipeline.ranking.generative import prepare_model
from seqrec_pipeline.ranking.repeat import (Mixture, RepeatInputs, explore_pooling, fit_repeat_explore, item_log_share,
                                            mixture_ranking, repeat_side)
from seqrec_pipeline.ranking.successors import cooccurrence_table, successor_table
from seqrec_pipeline.reporting.evaluation import predictions_table, ranking_from_predictions
from seqrec_pipeline.splits import BehaviorTable, eval_set, events_before, training_prefix
from seqrec_pipeline.vocab import TokenVocab, item_codes

log = logging.getLogger(__name__)


def check_trained_protocol(decoder_model, protocol: str) -> None:
    """Refuse a model trained on another split than the one evaluated (models saved before the split was
    recorded pass)."""
    trained = getattr(decoder_model.config, "seqrec_protocol", None)
    if trained is not None and trained != protocol:
        pipeline = "smb_decoder" if protocol == "last_session" else "mb_decoder"
        raise InputError(
            f"the newest stored model of this dataset/model/tokenizer was trained on the {trained} split, but this "
            f"evaluation uses {protocol} (smb_decoder and mb_decoder/decoder store their models under one path). "
            f"Train it for this split first: `kedro run --pipeline={pipeline}` with the same "
            "dataset, model and tokenizer parameters"
        )


def _decoder_inputs(decoder_model, behaviors, sid_table, sid_vocab, protocol, eval_params):
    check_trained_protocol(decoder_model, protocol)
    params = validate(EvalParams, eval_params, prefix="eval.")
    net = prepare_model(decoder_model, params.device)
    levels = BehaviorTable.from_table(behaviors).levels
    return net, item_codes(sid_table), TokenVocab.from_dict(sid_vocab), levels, params


def rank_decoder(decoder_model, sequences: pl.DataFrame, behaviors: pl.DataFrame, sid_table: pl.DataFrame,
                 sid_vocab: dict, protocol: str, max_history: int, eval_params: dict, *, split: str) -> pl.DataFrame:
    """The beam search's whole beam (best first, with scores) for every sample of ``split``."""
    net, codes, vocab, levels, params = _decoder_inputs(decoder_model, behaviors, sid_table, sid_vocab, protocol,
                                                        eval_params)
    data = eval_set(sequences, protocol, split, max_history, max_users=params.max_users(split))
    ranking = rank_generative(net, data, codes, vocab, levels, beam_size=params.beam_size, top_k=params.beam_size,
                              batch_size=params.batch_size, renormalize=params.renormalize,
                              temperature=params.temperature)
    return predictions_table(data, ranking)


def decoder_behavior_accuracy(decoder_model, sequences: pl.DataFrame, behaviors: pl.DataFrame,
                              sid_table: pl.DataFrame, sid_vocab: dict, protocol: str, max_history: int,
                              eval_params: dict) -> dict:
    """Behavior-item mode (the model also generates the behavior token): next-behavior accuracy."""
    net, codes, vocab, levels, params = _decoder_inputs(decoder_model, behaviors, sid_table, sid_vocab, protocol,
                                                        eval_params)
    data = eval_set(sequences, protocol, "test", max_history)
    return {"behavior_accuracy": next_behavior_accuracy(net, data, codes, vocab, levels, beam_size=params.beam_size,
                                                        batch_size=params.batch_size,
                                                        temperature=params.temperature)}


def rank_with_rule(sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame, model: str, protocol: str,
                   max_history: int, eval_params: dict, repeat: dict, embed: dict) -> tuple[pl.DataFrame, dict]:
    """A rule's ranking of the test samples and what it fitted on the validation session (empty for the rules
    without parameters)."""
    params = validate(EvalParams, eval_params, prefix="eval.")
    grid, cooc = validate(RepeatParams, repeat, prefix="repeat."), validate(EmbedParams, embed, prefix="embed.")
    data = eval_set(sequences, protocol, "test", max_history)
    valid = eval_set(sequences, protocol, "valid", max_history, max_users=params.valid_users)
    ranking, fitted = rule_ranking(model, sequences, valid, data, items.height, len(behaviors), protocol, grid,
                                   window=cooc.cf_window, chunk_events=cooc.cf_chunk_events, k=params.k)
    return predictions_table(data, ranking), fitted


def fit_repeat_head(validation_predictions: pl.DataFrame, sequences: pl.DataFrame, items: pl.DataFrame,
                    behaviors: pl.DataFrame, protocol: str, max_history: int, eval_params: dict, repeat: dict,
                    embed: dict) -> dict:
    """The repeat / explore mixture over this model, fitted on the validation session's rankings."""
    params = validate(EvalParams, eval_params, prefix="eval.")
    grid, cooc = validate(RepeatParams, repeat, prefix="repeat."), validate(EmbedParams, embed, prefix="embed.")
    valid = eval_set(sequences, protocol, "valid", max_history, max_users=params.valid_users)
    train = training_prefix(sequences, protocol, users="all")
    neighbors = (cooccurrence_table(train, grid.cooccurrence, window=cooc.cf_window, chunk_events=cooc.cf_chunk_events)
                 if any(w > 0 for w in grid.cooccurrence_weights) else None)
    head = fit_repeat_explore(valid, ranking_from_predictions(validation_predictions, valid), len(behaviors),
                              items.height, grid, params.k, item_prior=item_log_share(train.item, items.height),
                              successors=successor_table(train, grid.successors), neighbors=neighbors)
    log.info("repeat/explore head fitted on the validation session: NDCG@%d %.4f (the model alone %.4f; history "
             "items: %s; explore: %s)", params.k, head.validation[f"ndcg@{params.k}"],
             head.validation[f"base_ndcg@{params.k}"], repeat_side(head), explore_pooling(head))
    return head.to_dict()


def rank_repeat_aware(predictions: pl.DataFrame, repeat_head: dict, sequences: pl.DataFrame, behaviors: pl.DataFrame,
                      protocol: str, max_history: int, eval_params: dict, embed: dict) -> pl.DataFrame:
    """The test samples ranked by the repeat / explore mixture over the model's own ranking."""
    params = validate(EvalParams, eval_params, prefix="eval.")
    data = eval_set(sequences, protocol, "test", max_history)
    base = ranking_from_predictions(predictions, data)
    # the item prior as the head was fitted with it: on the training events
    mixture = Mixture.from_dict(repeat_head).count_item_prior(training_prefix(sequences, protocol, users="all").item)
    # counted on everything before the test windows, as the repeat side reads the whole past
    before = events_before(sequences, protocol, "test")
    successors = successor_table(before, mixture.successors.width) if mixture.uses_successors else None
    neighbors = (cooccurrence_table(before, mixture.cooccurrence.width, window=mixture.cooccurrence.window,
                                    chunk_events=validate(EmbedParams, embed, prefix="embed.").cf_chunk_events)
                 if mixture.uses_cooccurrence else None)
    ranking = mixture_ranking(data, RepeatInputs(data, len(behaviors)), base, mixture, params.k, successors=successors,
                              neighbors=neighbors)
    return predictions_table(data, ranking)
