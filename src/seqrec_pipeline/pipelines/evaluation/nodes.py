"""Evaluation nodes: rank the test samples (beam search or a rule), write metrics, predictions, plot."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from seqrec_pipeline.evaluation import (
    eval_set,
    metrics_figure,
    metrics_report,
    mlflow_metrics,
    next_behavior_accuracy,
    predictions_table,
    rank_generative,
    rank_rule,
    to_device,
)
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.vocab import TokenVocab

log = logging.getLogger(__name__)


def check_trained_protocol(decoder_model, protocol: str, dataset: str, model: str, tokenizer: str) -> None:
    """Refuse a model trained on another split than the one evaluated (models saved before the split was
    recorded pass)."""
    trained = getattr(decoder_model.config, "seqrec_protocol", None)
    if trained is not None and trained != protocol:
        pipeline = "smb_decoder" if protocol == "last_session" else "mb_decoder"
        raise InputError(
            f"the newest {model}-{tokenizer} model of {dataset} was trained on the {trained} split, but this "
            f"evaluation uses {protocol} (smb_decoder and mb_decoder/decoder share data/06_models/{dataset}/"
            f"{model}-{tokenizer}/model). Train it for this split first: `kedro run --pipeline={pipeline} "
            f"--params=\"dataset={dataset},model={model},tokenizer={tokenizer}\"`"
        )


def evaluation_outputs(report: dict, data, items, names: list[str], scores=None):
    merged = report["metrics"]["merged"]
    log.info("%s on %s (%s, %d samples): %s", report["model"], report["dataset"], report["protocol"],
             report["n_test"], ", ".join(f"{k} {v:.4f}" for k, v in merged.items() if k.endswith("@10")))
    return report, predictions_table(data, items, scores), metrics_figure(report, data, names), mlflow_metrics(report)


def evaluate_decoder(decoder_model, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                     sid_table: pl.DataFrame, sid_vocab: dict, protocol: str, max_history: int, eval_params: dict,
                     dataset: str, model: str, tokenizer: str, *, pipeline_name: str):
    check_trained_protocol(decoder_model, protocol, dataset, model, tokenizer)
    vocab = TokenVocab.from_dict(sid_vocab)
    codes = sid_table.drop("item_idx").to_numpy()
    levels = behaviors.sort("behavior_idx")["level"].to_numpy().astype(np.int64)
    ks = list(eval_params.get("topk", [1, 5, 10]))
    data = eval_set(sequences, protocol, "test", max_history)
    net = to_device(decoder_model, eval_params.get("device"))
    ranked, scores = rank_generative(net, data, codes, vocab, levels, beam_size=int(eval_params.get("beam_size", 20)),
                                     top_k=max(ks), batch_size=int(eval_params.get("batch_size", 16)),
                                     renormalize=bool(eval_params.get("renormalize", False)),
                                     temperature=eval_params.get("temperature"))
    names = behaviors.sort("behavior_idx")["behavior"].to_list()
    accuracy = None
    if pipeline_name == "mb_decoder":  # also let the model choose the behavior: next-behavior accuracy
        accuracy = next_behavior_accuracy(net, data, codes, vocab, levels, beam_size=int(eval_params.get("beam_size", 20)),
                                          batch_size=int(eval_params.get("batch_size", 16)),
                                          temperature=eval_params.get("temperature"))
    report = metrics_report(dataset=dataset, pipeline=pipeline_name, model=model, tokenizer=tokenizer,
                            protocol=protocol, n_users=data.n_users, n_items=items.height, data=data, items=ranked,
                            behavior_names=names, ks=ks, behavior_accuracy=accuracy)
    return evaluation_outputs(report, data, ranked, names, scores)


def evaluate_rule(sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame, protocol: str,
                  max_history: int, eval_params: dict, dataset: str, model: str):
    ks = list(eval_params.get("topk", [1, 5, 10]))
    data = eval_set(sequences, protocol, "test", max_history)
    ranked = rank_rule(model, sequences, data, items.height, protocol, max(ks))
    names = behaviors.sort("behavior_idx")["behavior"].to_list()
    report = metrics_report(dataset=dataset, pipeline="smb_rule", model=model, tokenizer=None, protocol=protocol,
                            n_users=data.n_users, n_items=items.height, data=data, items=ranked,
                            behavior_names=names, ks=ks)
    return evaluation_outputs(report, data, ranked, names)
