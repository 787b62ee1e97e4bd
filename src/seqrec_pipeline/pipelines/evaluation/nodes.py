"""Evaluation nodes: rank the test samples (beam search or a rule) into a predictions table; report it."""

from __future__ import annotations

import polars as pl

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import EvalParams, validate
from seqrec_pipeline.ranking import next_behavior_accuracy, rank_generative, rank_rule
from seqrec_pipeline.ranking.generative import prepare_model
from seqrec_pipeline.reporting.evaluation import predictions_table
from seqrec_pipeline.splits import BehaviorTable, eval_set
from seqrec_pipeline.vocab import TokenVocab


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
    codes = sid_table.drop("item_idx").to_numpy()
    return net, codes, TokenVocab.from_dict(sid_vocab), BehaviorTable.from_table(behaviors).levels, params


def rank_decoder(decoder_model, sequences: pl.DataFrame, behaviors: pl.DataFrame, sid_table: pl.DataFrame,
                 sid_vocab: dict, protocol: str, max_history: int, eval_params: dict) -> pl.DataFrame:
    net, codes, vocab, levels, params = _decoder_inputs(decoder_model, behaviors, sid_table, sid_vocab, protocol,
                                                        eval_params)
    data = eval_set(sequences, protocol, "test", max_history)
    ranking = rank_generative(net, data, codes, vocab, levels, beam_size=params.beam_size, top_k=params.k,
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


def rank_with_rule(sequences: pl.DataFrame, items: pl.DataFrame, model: str, protocol: str, max_history: int,
                   eval_params: dict) -> pl.DataFrame:
    params = validate(EvalParams, eval_params, prefix="eval.")
    data = eval_set(sequences, protocol, "test", max_history)
    return predictions_table(data, rank_rule(model, sequences, data, items.height, protocol, params.k))
