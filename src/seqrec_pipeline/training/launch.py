"""Run a training job in its own process(es): ``python -m seqrec_pipeline.training.launch <job.json>``.

A Kedro node must never be re-executed per rank (kedro#2049), so multi-GPU training is a subprocess: the
node writes its inputs and a job file, starts the launcher (``deepspeed`` or ``torchrun``; a plain
``python`` process on a CPU-only or one-GPU machine), waits, and reads the result JSON that rank 0 wrote.
:func:`launch_training` does all of that in one call::

    result = launch_training(job_dir, sequences, behaviors, codes, vocab,
                    model={"name": "gamer", "preset": "cpu-small", "overrides": {}},
                    samples={"protocol": "last_session", "mode": "user", "max_history": 50,
                             "augment": 4, "augment_mode": "static", "seed": 42},
                    train=TrainConfig(output_dir="work/gamer", epochs=200, lr=5e-4, weight_decay=0.01,
                                      warmup_ratio=0.1, patience=20, seed=42, log_every=30))
    JsonlLogger.read(result["log_path"])   # step / epoch curves for MLflow

Job file (JSON)::

    {"data": {"sequences": "<parquet>", "behaviors": "<parquet>", "codes": "<npy>", "vocab": {TokenVocab.to_dict()}},
     "samples": {"protocol", "mode", "max_history", "augment", "augment_mode", "seed", "users", "loss_on_repeats"},   # make_datasets kwargs
     "model": {"name", "preset", "overrides"}  or  {"path": "<save_pretrained dir>"},
     "train": {TrainConfig fields},
     "validation_metric": null or {"factory": "package.module:function", "kwargs": {...}},
     "result_path": "<json written by rank 0>", "log_path": "<jsonl written by rank 0>"}

``validation_metric.factory(context: JobContext, **kwargs)`` returns the ``(model, epoch) -> float``
callable the trainer maximises (e.g. NDCG@10 of a beam search on the validation targets); a callable cannot
travel in a JSON file, an import path can.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from seqrec_pipeline.data.samples import make_datasets
from seqrec_pipeline.errors import RunFailure
from seqrec_pipeline.vocab import TokenVocab

from .distributed import free_port, launcher_free_env, setup_distributed
from .trainer import JsonlLogger, TrainConfig, seed_everything, train

log = logging.getLogger(__name__)

Launcher = Literal["auto", "python", "torchrun", "deepspeed"]


@dataclass
class JobContext:
    """What a validation-metric factory gets: the job's data, already loaded."""

    sequences: pl.DataFrame
    behaviors: pl.DataFrame
    codes: np.ndarray
    vocab: TokenVocab
    samples: dict[str, Any]
    model: dict[str, Any]


def import_object(path: str) -> Any:
    """``"package.module:attribute"`` -> the object."""
    module, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"expected 'package.module:attribute', got {path!r}")
    return getattr(importlib.import_module(module), attribute)


def load_job_data(job: dict[str, Any]) -> JobContext:
    data = job["data"]
    return JobContext(
        sequences=pl.read_parquet(data["sequences"]),
        behaviors=pl.read_parquet(data["behaviors"]),
        codes=np.load(data["codes"]),
        vocab=TokenVocab.from_dict(data["vocab"]),
        samples=dict(job.get("samples", {})),
        model=dict(job["model"]),
    )


def build_job_model(spec: dict[str, Any], vocab: TokenVocab, codes: np.ndarray) -> torch.nn.Module:
    from seqrec_pipeline.models.generative import build_model, load_model

    if "path" in spec:
        return load_model(spec["path"])
    return build_model(spec["name"], vocab, spec.get("preset", "cpu-small"), codes=codes,
                       **spec.get("overrides", {}))


def model_datasets(model, sequences: pl.DataFrame, behaviors: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab,
                   samples: dict[str, Any]):
    """(train, valid) sample datasets shaped for ``model``: encoder-decoder batches for tiger / tiger_mb / mbgen,
    the target's behavior token in the labels when the model predicts the behavior."""
    return make_datasets(sequences, behaviors, codes, vocab, encoder_decoder=bool(model.config.is_encoder_decoder),
                         behavior_loss=bool(getattr(model.config, "predict_behavior", False)),
                         item_labels=bool(getattr(model.config, "item_head", False)), **samples)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """The training a job file describes, in this process (one rank of a launched run)."""
    dist = setup_distributed()
    context = load_job_data(job)
    config = TrainConfig(**job["train"])
    seed_everything(config.seed)  # identical initial weights on every rank
    model = build_job_model(context.model, context.vocab, context.codes)
    train_data, valid_data = model_datasets(model, context.sequences, context.behaviors, context.codes,
                                            context.vocab, context.samples)
    metric = None
    if job.get("validation_metric"):
        spec = job["validation_metric"]
        metric = import_object(spec["factory"])(context, **spec.get("kwargs", {}))
    log_path = Path(job.get("log_path") or Path(config.output_dir) / "train_log.jsonl")
    logger = JsonlLogger(log_path)
    if dist.is_main and not config.resume and log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log; a resumed one appends
    result = train(model, train_data, valid_data, config, on_log=logger.on_log, on_epoch=logger.on_epoch,
                   validation_metric=metric)  # fmt: skip
    result["log_path"] = str(log_path)
    result["world_size"] = dist.world_size
    if dist.is_main and job.get("result_path"):
        path = Path(job["result_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="job JSON file")
    args, _ = parser.parse_known_args(argv)  # tolerate a launcher's --local_rank=N
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_job(json.loads(Path(args.job).read_text()))
    if torch.distributed.is_initialized():
        gc.collect()  # free the engine's tensors while the interpreter and the group are alive
        torch.distributed.barrier()  # no rank tears the group down while another still uses it
        torch.distributed.destroy_process_group()
        # Everything is written and the group is gone; skip interpreter finalization, where gloo's worker
        # threads can still be joinable and abort the process ("terminate called without an active exception").
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
    return 0


# ----------------------------------------------------------------------------------------------------------
# Parent side (e.g. a Kedro node)
# ----------------------------------------------------------------------------------------------------------


def write_job(
    job_dir: str | Path,
    sequences: pl.DataFrame,
    behaviors: pl.DataFrame,
    codes: np.ndarray,
    vocab: TokenVocab,
    *,
    model: dict[str, Any],
    samples: dict[str, Any],
    train: TrainConfig | dict[str, Any],
    validation_metric: dict[str, Any] | None = None,
) -> Path:
    """Write the inputs and ``job.json`` into ``job_dir``; returns the job file's path."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    sequences.write_parquet(job_dir / "sequences.parquet")
    behaviors.write_parquet(job_dir / "behaviors.parquet")
    np.save(job_dir / "codes.npy", np.asarray(codes))
    train_fields = train.to_dict() if isinstance(train, TrainConfig) else dict(train)
    job = {
        "data": {"sequences": str(job_dir / "sequences.parquet"), "behaviors": str(job_dir / "behaviors.parquet"),
                 "codes": str(job_dir / "codes.npy"), "vocab": vocab.to_dict()},
        "samples": samples,
        "model": model,
        "train": train_fields,
        "validation_metric": validation_metric,
        "result_path": str(job_dir / "result.json"),
        "log_path": str(Path(train_fields["output_dir"]) / "train_log.jsonl"),
    }  # fmt: skip
    path = job_dir / "job.json"
    path.write_text(json.dumps(job, indent=2))
    return path


def launch_command(job_path: str | Path, launcher: Launcher = "auto", num_gpus: int | None = None,
                   ranks: int | None = None) -> list[str]:
    """The argv that runs a job file: ``python -m ...launch`` for one process, else a distributed launcher.

    ``ranks``: processes to start (default: one per GPU, one without a GPU); on a CPU-only machine several
    ranks are CPU processes joined by gloo.  ``auto``: the ``deepspeed`` launcher for several ranks, a plain
    process for one.  Launchers run as ``python -m`` of this interpreter, so no PATH lookup is needed.
    """
    num_gpus = torch.cuda.device_count() if num_gpus is None else num_gpus
    ranks = max(1, num_gpus) if ranks is None else ranks
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    if launcher == "auto":
        launcher = "deepspeed" if ranks > 1 else "python"
    module, job = "seqrec_pipeline.training.launch", str(job_path)
    nproc = str(ranks)
    if launcher == "python":
        if ranks > 1:
            raise ValueError(f"launcher 'python' runs one process; {ranks} ranks need deepspeed or torchrun")
        return [sys.executable, "-m", module, job]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", nproc,
                "--master_port", str(free_port()), "-m", module, job]  # fmt: skip
    if launcher == "deepspeed":
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", nproc,
                "--master_port", str(free_port()), "--no_local_rank", "--module", module, job]  # fmt: skip
    raise ValueError(f"unknown launcher {launcher!r}; choose auto, python, torchrun or deepspeed")


def launch_job(
    job_path: str | Path,
    *,
    launcher: Launcher = "auto",
    num_gpus: int | None = None,
    ranks: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run a job file in a subprocess and return the result rank 0 wrote.

    The child gets this process's environment without rendezvous variables (it sets up its own process
    group; see ``distributed.launcher_free_env``), plus ``env``.  Output streams to this process's
    console (progress bars included).
    """
    job = json.loads(Path(job_path).read_text())
    result_path = Path(job["result_path"])
    result_path.unlink(missing_ok=True)  # never read back a previous run's result
    command = launch_command(job_path, launcher, num_gpus, ranks)
    log.info("launching training: %s", " ".join(command))
    child_env = launcher_free_env()
    if not torch.cuda.is_available():
        child_env.setdefault("DS_ACCELERATOR", "cpu")  # the deepspeed launcher counts CPU "devices" then
    # The launchers stop every rank as soon as one exits with an error, so a failing rank never leaves the
    # others waiting in a collective; ``timeout`` bounds whatever else could hang.
    # its own process group, so a timeout stops the launcher's ranks too, not only the launcher
    process = subprocess.Popen(command, env={**child_env, **(env or {})}, start_new_session=True)
    try:
        returncode = process.wait(timeout=timeout)
    except BaseException as exc:  # timeout, or this process interrupted: no rank outlives it
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise RunFailure(f"training did not finish within {timeout:g} s and was stopped: "
                             f"{' '.join(command)}") from None
        raise
    if returncode != 0:
        raise RunFailure(f"training failed: a rank exited with code {returncode} (its error is in the log above): "
                         f"{' '.join(command)}")  # fmt: skip
    if not result_path.exists():
        raise RunFailure(f"training process exited cleanly but wrote no result to {result_path}")
    return json.loads(result_path.read_text())


def launch_training(
    job_dir: str | Path,
    sequences: pl.DataFrame,
    behaviors: pl.DataFrame,
    codes: np.ndarray,
    vocab: TokenVocab,
    *,
    model: dict[str, Any],
    samples: dict[str, Any],
    train: TrainConfig | dict[str, Any],
    validation_metric: dict[str, Any] | None = None,
    launcher: Launcher = "auto",
    num_gpus: int | None = None,
    ranks: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """:func:`write_job` then :func:`launch_job`."""
    job_path = write_job(job_dir, sequences, behaviors, codes, vocab, model=model, samples=samples, train=train,
                         validation_metric=validation_metric)  # fmt: skip
    return launch_job(job_path, launcher=launcher, num_gpus=num_gpus, ranks=ranks, env=env, timeout=timeout)


if __name__ == "__main__":
    sys.exit(main())
