"""smb_rec node: train a discriminative baseline on the stored split, rank the test samples, write the outputs."""

from __future__ import annotations

import logging

import mlflow
import polars as pl

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.evaluation import eval_set, metrics_report
from seqrec_pipeline.models.discriminative import build_discriminative
from seqrec_pipeline.pipelines.evaluation.nodes import evaluation_outputs
from seqrec_pipeline.training.discriminative import (
    checkpoint,
    fit_discriminative,
    rank_discriminative,
    sequence_samples,
    training_samples,
    validation_metric,
)

log = logging.getLogger(__name__)

# Fallbacks for keys missing from a user's own ``rec:`` block: the values of conf/base/parameters.yml.
REC_DEFAULTS = {"sample_mode": "sequence", "batch_size": 32, "epochs": 200, "lr": 1e-3, "weight_decay": 0.0,
                "patience": 15, "min_epochs": 30, "device": None, "progress": True}


def _log_epoch(epoch: int, metrics: dict) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({f"epoch/{k}".replace("@", "_at_"): float(v) for k, v in metrics.items()}, step=epoch)


def train_and_evaluate_discriminative(sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                                      protocol: str, max_history: int, eval_params: dict, dataset: str, model: str,
                                      seed: int, rec: dict):
    rec = {**REC_DEFAULTS, **(rec or {})}
    names = behaviors.sort("behavior_idx")["behavior"].to_list()
    target = int(behaviors.filter(pl.col("is_target"))["behavior_idx"][0])
    overrides = dict(((rec.get("models") or {}).get(str(model).lower()) or {}))
    try:
        net = build_discriminative(str(model), items.height, len(names), int(max_history),
                                   default_target_behavior=target, **overrides)
    except ValueError as exc:  # unknown model name or option: a user mistake, not a crash
        raise InputError(f"{exc} (smb_rec: set model=<name>, options under rec.models.<name>)") from exc
    sample_mode = str(rec["sample_mode"])
    if sample_mode == "sequence":
        if not net.supports_sequence_loss:
            raise InputError(f"rec.sample_mode=sequence trains on event windows; {model} does not support it "
                             "(it has no sequence_loss); use rec.sample_mode=event")
        samples = sequence_samples(sequences, protocol, int(max_history))
    elif sample_mode == "event":
        samples = training_samples(sequences, protocol, int(max_history))
    else:
        raise InputError(f"unknown rec.sample_mode '{sample_mode}'; choose event or sequence")
    batch_size = int(rec["batch_size"])
    log.info("smb_rec %s on %s (%s): %d training samples (%s), %d parameters", model, dataset, protocol,
             len(samples), sample_mode, sum(p.numel() for p in net.parameters()))
    validate = validation_metric(sequences, protocol, int(max_history), target, batch_size=batch_size)
    summary = fit_discriminative(
        net, samples, validate, epochs=int(rec["epochs"]), batch_size=batch_size, lr=float(rec["lr"]),
        weight_decay=float(rec["weight_decay"]), patience=int(rec["patience"]), min_epochs=int(rec["min_epochs"]),
        seed=int(seed), device=rec["device"], on_epoch=_log_epoch, progress=bool(rec["progress"]),
    )
    if mlflow.active_run() is not None:
        mlflow.log_params({"rec.n_parameters": summary["n_parameters"], "rec.best_epoch": summary["best_epoch"],
                           "rec.n_train_samples": summary["n_train_samples"]})
    ks = list(eval_params.get("topk", [1, 5, 10]))
    data = eval_set(sequences, protocol, "test", int(max_history))
    ranked = rank_discriminative(net, data, max(ks), batch_size, int(max_history))
    report = metrics_report(dataset=dataset, pipeline="smb_rec", model=model, tokenizer=None, protocol=protocol,
                            n_users=data.n_users, n_items=items.height, data=data, items=ranked,
                            behavior_names=names, ks=ks)
    return (*evaluation_outputs(report, data, ranked, names), checkpoint(net, summary))
