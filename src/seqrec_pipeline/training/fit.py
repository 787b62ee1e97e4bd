"""Train one generative model on the stored splits and SID table (what the ``train`` node calls)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import torch

from seqrec_pipeline.data.samples import make_datasets
from seqrec_pipeline.evaluation import validation_ndcg
from seqrec_pipeline.models.generative import build_model, load_model
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.training.launch import launch_training
from seqrec_pipeline.training.trainer import JsonlLogger, TrainConfig, train
from seqrec_pipeline.vocab import TokenVocab

log = logging.getLogger(__name__)


def fit_decoder(sequences: pl.DataFrame, behaviors: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab, *,
                model_name: str, preset: str, model_overrides: dict, protocol: str, max_history: int,
                augment: int, train_params: dict, eval_params: dict, seed: int, output_dir: str | Path,
                on_log: Callable | None = None, on_epoch: Callable | None = None) -> tuple[Any, dict]:
    """Build, train (DeepSpeed engine, early stopping) and return the best model and the run summary."""
    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    done = output_dir / "done.json"
    resume = train_params.get("resume", "auto")
    resume = (output_dir / "last").exists() and not done.exists() if resume == "auto" else bool(resume)
    if resume:
        log.info("resuming the interrupted run in %s", output_dir)
    done.unlink(missing_ok=True)
    select_ndcg = train_params.get("select_metric", "ndcg@10") != "loss"
    levels = behaviors.sort("behavior_idx")["level"].to_numpy().astype(np.int64)
    target = int(behaviors.filter(pl.col("is_target"))["behavior_idx"][0])
    metric_kwargs = {"target_behavior": target, "protocol": protocol, "max_history": max_history,
                     "beam_size": int(eval_params.get("beam_size", 20))}
    config = TrainConfig(
        output_dir=str(output_dir), epochs=int(train_params.get("epochs", 10)), lr=float(train_params.get("lr", 1e-3)),
        weight_decay=float(train_params.get("weight_decay", 0.01)),
        warmup_ratio=float(train_params.get("warmup_ratio", 0.1)),
        micro_batch_size=int(train_params.get("batch_size", 64)), patience=int(train_params.get("patience", 3)),
        seed=seed, log_every=int(train_params.get("log_every", 10)),
        deepspeed_config=train_params.get("deepspeed_config"), resume=resume,
        metric_name="valid/ndcg@10" if select_ndcg else None,
    )
    launch = train_params.get("launch", "auto")
    if launch == "auto":
        launch = "subprocess" if torch.cuda.device_count() > 1 else "in_process"
    if launch == "subprocess":
        # several GPUs: the DeepSpeed launcher runs the ranks in child processes (never Kedro per rank);
        # rank 0 writes the result and a JSONL log that is replayed into the callbacks here
        result = launch_training(
            output_dir / "job", sequences, behaviors, codes, vocab,
            model={"name": model_name, "preset": preset, "overrides": dict(model_overrides or {})},
            samples={"protocol": protocol, "mode": train_params.get("sample_mode", "user"),
                     "max_history": max_history, "augment": augment,
                     "augment_mode": train_params.get("augment_mode", "static"), "seed": seed},
            train=config, launcher=train_params.get("launcher", "auto"),
            validation_metric={"factory": "seqrec_pipeline.evaluation:validation_ndcg_for_job",
                               "kwargs": metric_kwargs} if select_ndcg else None,
        )
        for record in JsonlLogger.read(result["log_path"]):
            callback = on_log if record["kind"] == "step" else on_epoch
            if callback is not None:
                callback(record.get("step", record.get("epoch")), record["metrics"])
        n_train, n_valid = result.get("n_train_samples"), result.get("n_valid_samples")
    elif launch == "in_process":
        model = build_model(model_name, vocab, preset, **(model_overrides or {}))
        train_set, valid_set = make_datasets(
            sequences, behaviors, codes, vocab, protocol=protocol, mode=train_params.get("sample_mode", "user"),
            max_history=max_history, augment=augment, augment_mode=train_params.get("augment_mode", "static"),
            seed=seed, encoder_decoder=model_name == "tiger",
        )
        metric_fn = validation_ndcg(sequences, codes, vocab, levels, **metric_kwargs) if select_ndcg else None
        result = train(model, train_set, valid_set, config, on_log=on_log, on_epoch=on_epoch,
                       validation_metric=metric_fn)
        n_train, n_valid = len(train_set), len(valid_set)
    else:
        raise InputError(f"unknown train.launch '{launch}'; choose auto, in_process or subprocess")
    best = load_model(result["best_dir"])
    summary = {k: v for k, v in result.items() if k != "history"} | {
        "n_train_samples": n_train, "n_valid_samples": n_valid, "history": result["history"], "launch": launch,
        "n_parameters": int(sum(p.numel() for p in best.parameters())), "model": model_name, "preset": preset,
    }
    done.write_text(json.dumps({"best_epoch": result["best_epoch"]}))
    return best, summary
