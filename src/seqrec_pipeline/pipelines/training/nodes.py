"""Training nodes: parameters -> training settings; stored splits + SID table -> best decoder, curves in MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import polars as pl

from seqrec_pipeline.params import TrainingSettings
from seqrec_pipeline.training.fit import fit_decoder
from seqrec_pipeline.vocab import TokenVocab, item_codes


def _log(step: int, metrics: dict) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in metrics.items()}, step=step)


def training_settings(model: str, model_preset: str, models: dict, protocol: str, train_users: str, max_history: int,
                      augment: int, train: dict, eval: dict, seed: int) -> dict:
    return TrainingSettings.from_parameters(model=model, model_preset=model_preset, models=models,
                                            protocol=protocol, train_users=train_users,
                                            max_history=max_history, augment=augment, train=train, eval=eval,
                                            seed=seed).model_dump()


def train_decoder(sequences: pl.DataFrame, behaviors: pl.DataFrame, sid_table: pl.DataFrame, sid_vocab: dict,
                  settings: dict, work_dir: Path):
    settings = TrainingSettings.model_validate(settings)
    best, summary = fit_decoder(
        sequences, behaviors, item_codes(sid_table), TokenVocab.from_dict(sid_vocab), settings,
        work_dir, on_log=_log,
        on_epoch=lambda epoch, m: _log(epoch, {f"epoch/{k}": v for k, v in m.items() if k != "epoch"}),
    )
    # smb_decoder and mb_decoder/decoder store the same model/tokenizer under one versioned path; the split
    # travels in config.json so an evaluation on another split refuses the model (evaluation nodes)
    best.config.seqrec_protocol = settings.protocol
    if mlflow.active_run() is not None:
        mlflow.log_dict(best.config.to_dict(), "model/config.json")
        resolved = {f"model.{key}": getattr(best.config, key)  # what "auto" resolved to
                    for key in ("item_head", "item_input") if hasattr(best.config, key)}
        mlflow.log_params({"model.n_parameters": summary["n_parameters"], "model.best_epoch": summary["best_epoch"]}
                          | resolved)
    return best, summary
