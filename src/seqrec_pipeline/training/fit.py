"""Train one generative model on the stored splits and SID table (what the ``train`` node calls)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import torch

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.generative import build_model, load_model
from seqrec_pipeline.params import TrainingSettings
from seqrec_pipeline.ranking.generative import validation_ndcg
from seqrec_pipeline.splits import BehaviorTable
from seqrec_pipeline.training.launch import launch_training, model_datasets
from seqrec_pipeline.training.trainer import JsonlLogger, TrainConfig, train
from seqrec_pipeline.vocab import TokenVocab

log = logging.getLogger(__name__)


# training settings that may change between an interrupted run and its continuation
RESUMABLE_CHANGES = ("epochs", "patience", "resume", "log_every", "launch", "launcher")


def run_fingerprint(sequences: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab, settings: TrainingSettings) -> str:
    """What a checkpoint depends on: the data, the SID table and the settings (except those that may change
    when an interrupted run is continued).  It names the run's working directory."""
    train = {k: v for k, v in sorted(settings.train.model_dump().items()) if k not in RESUMABLE_CHANGES}
    described = settings.model_dump() | {"train": train, "vocab": vocab.to_dict()}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    digest.update(sequences.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()[:16]


class RunDirectory:
    """The working directory of one training configuration: ``<work_dir>/<fingerprint>/``.

    It holds the resumable checkpoint (``last/``), the best model (``best/``), the training log and
    ``settings.json``; an exclusive lock on its ``lock`` file is held while a process trains in it, so two
    runs of the same configuration at once are refused, and runs of other configurations never share state.
    The lock is an OS file lock: it is released when the process ends, even if it is killed.
    """

    def __init__(self, work_dir: str | Path, fingerprint: str):
        self.path = Path(work_dir) / fingerprint
        self._handle = None

    def __enter__(self) -> RunDirectory:
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / "lock", "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise InputError(f"a training of this exact configuration is already running in {self.path} "
                             f"({owner}); wait for it to finish, or change a setting (e.g. seed) to train another "
                             "model at the same time") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def begin(self, resume: str | bool) -> bool:
        """Whether to continue this configuration's interrupted run: ``auto`` continues one that did not
        finish; ``True`` continues whatever checkpoint there is; ``False`` starts fresh.  Starting fresh
        deletes the old checkpoint, so an early interruption can never resume from it later."""
        last, done = self.path / "last", self.path / "done.json"
        if resume == "auto":
            resuming = last.is_dir() and not done.exists()
        else:
            resuming = bool(resume) and last.is_dir()
            if resume and not resuming:
                log.warning("train.resume=true but %s holds no checkpoint: starting fresh", self.path)
        done.unlink(missing_ok=True)
        if not resuming:
            shutil.rmtree(last, ignore_errors=True)
        return resuming

    def finish(self, best_epoch: int) -> None:
        (self.path / "done.json").write_text(json.dumps({"best_epoch": best_epoch}))


def fit_decoder(sequences: pl.DataFrame, behaviors: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab,
                settings: TrainingSettings, work_dir: str | Path, *, on_log: Callable | None = None,
                on_epoch: Callable | None = None) -> tuple[Any, dict]:
    """Build, train (DeepSpeed engine, early stopping) and return the best model and the run summary.

    ``work_dir`` holds one subdirectory per configuration (:class:`RunDirectory`)."""
    train_params, seed = settings.train, settings.seed
    torch.manual_seed(seed)
    with RunDirectory(work_dir, run_fingerprint(sequences, codes, vocab, settings)) as run_dir:
        (run_dir.path / "settings.json").write_text(settings.model_dump_json(indent=2))
        resume = run_dir.begin(train_params.resume)
        if resume:
            log.info("resuming the interrupted run in %s", run_dir.path)
        result, n_train, n_valid, launch = _train(sequences, behaviors, codes, vocab, settings, run_dir.path, resume,
                                                  on_log, on_epoch)
        best = load_model(result["best_dir"])
        run_dir.finish(result["best_epoch"])
    summary = {k: v for k, v in result.items() if k != "history"} | {
        "n_train_samples": n_train, "n_valid_samples": n_valid, "history": result["history"], "launch": launch,
        "n_parameters": int(sum(p.numel() for p in best.parameters())), "model": settings.model.name,
        "preset": settings.model.preset, "run_dir": str(run_dir.path),
    }
    return best, summary


def _train(sequences, behaviors, codes, vocab, settings: TrainingSettings, output_dir: Path, resume: bool,
           on_log, on_epoch):
    train_params, seed, spec = settings.train, settings.seed, settings.model
    select_ndcg = train_params.select_metric != "loss"
    table = BehaviorTable.from_table(behaviors)
    metric_kwargs = {"target_behavior": table.target, "protocol": settings.protocol,
                     "explore": train_params.select_metric == "explore_ndcg@10",
                     "max_history": settings.max_history, "beam_size": settings.beam_size,
                     "valid_users": settings.valid_users}
    config = TrainConfig(
        output_dir=str(output_dir), epochs=train_params.epochs, lr=train_params.lr,
        weight_decay=train_params.weight_decay, warmup_ratio=train_params.warmup_ratio,
        micro_batch_size=train_params.batch_size, patience=train_params.patience, seed=seed,
        log_every=train_params.log_every, deepspeed_config=train_params.deepspeed_config, resume=resume,
        metric_name=f"valid/{train_params.select_metric}" if select_ndcg else None,
    )
    samples = {"protocol": settings.protocol, "mode": train_params.sample_mode, "max_history": settings.max_history,
               "augment": settings.augment, "augment_mode": train_params.augment_mode, "seed": seed,
               "users": settings.train_users, "loss_on_repeats": train_params.loss_on_repeats}
    launch = train_params.launch
    ranks = train_params.ranks or max(1, torch.cuda.device_count())
    if launch == "auto":
        launch = "subprocess" if ranks > 1 else "in_process"
    if launch == "subprocess":
        # several ranks: the DeepSpeed launcher runs them in child processes (never Kedro per rank);
        # rank 0 writes the result and a JSONL log that is replayed into the callbacks here
        result = launch_training(
            output_dir / "job", sequences, behaviors, codes, vocab,
            model={"name": spec.name, "preset": spec.preset, "overrides": dict(spec.overrides)},
            samples=samples, train=config, launcher=train_params.launcher, ranks=ranks,
            validation_metric={"factory": "seqrec_pipeline.ranking.generative:validation_ndcg_for_job",
                               "kwargs": metric_kwargs} if select_ndcg else None,
        )
        for record in JsonlLogger.read(result["log_path"]):
            callback = on_log if record["kind"] == "step" else on_epoch
            if callback is not None:
                callback(record.get("step", record.get("epoch")), record["metrics"])
        return result, result.get("n_train_samples"), result.get("n_valid_samples"), launch
    model = build_model(spec.name, vocab, spec.preset, codes=codes, **spec.overrides)
    train_set, valid_set = model_datasets(model, sequences, behaviors, codes, vocab, samples)
    metric_fn = validation_ndcg(sequences, codes, vocab, table.levels, **metric_kwargs) if select_ndcg else None
    result = train(model, train_set, valid_set, config, on_log=on_log, on_epoch=on_epoch, validation_metric=metric_fn)
    return result, len(train_set), len(valid_set), launch
