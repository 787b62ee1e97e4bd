"""Train one generative model on the stored splits and SID table (what the ``train`` node calls)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
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


# training settings that may change between an interrupted run and its continuation
RESUMABLE_CHANGES = ("epochs", "patience", "resume", "log_every", "launch", "launcher")


def run_fingerprint(codes: np.ndarray, vocab: TokenVocab, model_name: str, preset: str, overrides: dict,
                    protocol: str, max_history: int, augment: int, train_params: dict, seed: int) -> str:
    """What a checkpoint depends on: an interrupted run is only continued under the same fingerprint."""
    settings = {
        "model": model_name, "preset": preset, "overrides": overrides or {}, "vocab": vocab.to_dict(),
        "codes": hashlib.sha256(np.ascontiguousarray(codes, dtype=np.int64).tobytes()).hexdigest(),
        "protocol": protocol, "max_history": max_history, "augment": augment, "seed": seed,
        "train": {k: v for k, v in sorted(train_params.items()) if k not in RESUMABLE_CHANGES},
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def should_resume(output_dir: Path, fingerprint: str, resume: str | bool) -> bool:
    """auto: continue an interrupted run of the same configuration; an interrupted run of another
    configuration is moved aside (kept, never overwritten) and training starts fresh."""
    last, done = output_dir / "last", output_dir / "done.json"
    stored = (output_dir / "fingerprint.txt").read_text() if (output_dir / "fingerprint.txt").exists() else None
    interrupted = last.exists() and not done.exists()
    if resume == "auto":
        if interrupted and stored != fingerprint:
            aside = output_dir / f"last.interrupted-{stored or 'unknown'}"
            log.warning("an interrupted run with another configuration is in %s; keeping it as %s and starting "
                        "fresh", last, aside)
            shutil.rmtree(aside, ignore_errors=True)
            last.rename(aside)
            return False
        return interrupted
    if resume and stored != fingerprint:
        raise InputError(f"train.resume=true but {output_dir} holds a run of another configuration "
                         f"({stored} != {fingerprint}); use train.resume=auto or false to start fresh")
    return bool(resume) and last.exists()


def begin_run(output_dir: Path, fingerprint: str, resume: str | bool) -> bool:
    """Decide whether to resume (:func:`should_resume`), then mark ``output_dir`` as holding an unfinished run
    of ``fingerprint``.  Starting fresh deletes the ``last`` checkpoint of a finished run, so that an
    interruption of this run can never be continued from that older checkpoint."""
    output_dir = Path(output_dir)
    resuming = should_resume(output_dir, fingerprint, resume)
    (output_dir / "done.json").unlink(missing_ok=True)
    if not resuming:
        shutil.rmtree(output_dir / "last", ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "fingerprint.txt").write_text(fingerprint)
    return resuming


def fit_decoder(sequences: pl.DataFrame, behaviors: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab, *,
                model_name: str, preset: str, model_overrides: dict, protocol: str, max_history: int,
                augment: int, train_params: dict, eval_params: dict, seed: int, output_dir: str | Path,
                on_log: Callable | None = None, on_epoch: Callable | None = None) -> tuple[Any, dict]:
    """Build, train (DeepSpeed engine, early stopping) and return the best model and the run summary."""
    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    done = output_dir / "done.json"
    fingerprint = run_fingerprint(codes, vocab, model_name, preset, model_overrides, protocol, max_history, augment,
                                  train_params, seed)
    resume = begin_run(output_dir, fingerprint, train_params.get("resume", "auto"))
    if resume:
        log.info("resuming the interrupted run in %s", output_dir)
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
            samples={"protocol": protocol, "mode": train_params.get("sample_mode", "auto"),
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
            sequences, behaviors, codes, vocab, protocol=protocol, mode=train_params.get("sample_mode", "auto"),
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
