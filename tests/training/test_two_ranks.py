"""Data-parallel training on CPU: two gloo ranks started by the DeepSpeed launcher, against one rank."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from seqrec_pipeline.errors import RunFailure
from seqrec_pipeline.training.launch import launch_command, launch_training
from seqrec_pipeline.training.trainer import JsonlLogger, TrainConfig

from .helpers import BEHAVIORS, CODES, CPU_CONFIG, TINY, VOCAB

# Two ranks average two per-rank mean losses where one rank averages over the whole global batch, and the
# reductions run in another order: the curves agree to float noise plus that weighting, not bit for bit.
LOSS_RTOL = 2e-2
GLOBAL_BATCH = 16
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}  # ranks import the tests' helpers


def _run(tmp_path, name, sequences, *, ranks, launcher, validation_metric=None, timeout=600):
    train = TrainConfig(output_dir=str(tmp_path / name / "model"), epochs=2, lr=1e-2, weight_decay=0.01,
                        warmup_ratio=0.1, patience=3, seed=42, micro_batch_size=GLOBAL_BATCH // ranks, log_every=1,
                        deepspeed_config=str(CPU_CONFIG), progress=False)  # fmt: skip
    return launch_training(
        tmp_path / name / "job", sequences, BEHAVIORS, CODES, VOCAB,
        model={"name": "qwen3", "preset": "cpu-small", "overrides": TINY["qwen3"]},
        samples={"protocol": "last_session", "mode": "user", "max_history": 8, "augment": 2,
                 "augment_mode": "static", "seed": 0},
        train=train, launcher=launcher, ranks=ranks, num_gpus=0, env=ENV, timeout=timeout,
        validation_metric=validation_metric,
    )  # fmt: skip


def test_ranks_choose_the_launcher_and_its_process_count():
    command = launch_command("job.json", "auto", num_gpus=0, ranks=2)  # CPU only: two gloo processes
    assert command[1:5] == ["-m", "deepspeed.launcher.runner", "--num_gpus", "2"]
    assert launch_command("job.json", "torchrun", num_gpus=0, ranks=3)[3:5] == ["--nproc_per_node", "3"]
    assert launch_command("job.json", "auto", num_gpus=4, ranks=1)[1:] == ["-m", "seqrec_pipeline.training.launch",
                                                                          "job.json"]  # fmt: skip
    with pytest.raises(ValueError, match="launcher 'python' runs one process"):
        launch_command("job.json", "python", num_gpus=0, ranks=2)


def _curves(result):
    records = JsonlLogger.read(result["log_path"])
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    return steps, epochs


@pytest.mark.slow
def test_two_ranks_match_one_rank_and_only_rank_0_writes(sequences, tmp_path):
    one = _run(tmp_path, "one", sequences, ranks=1, launcher="python")
    two = _run(tmp_path, "two", sequences, ranks=2, launcher="deepspeed")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["global_step"] == one["global_step"] > 2  # same global batch: same optimizer steps
    steps_1, epochs_1 = _curves(one)
    steps_2, epochs_2 = _curves(two)
    # rank 0 alone writes the log: one record per step and per epoch, not one per rank
    assert [r["step"] for r in steps_2] == list(range(1, two["global_step"] + 1))
    assert [r["epoch"] for r in epochs_2] == [1, 2]
    loss_1 = np.array([r["metrics"]["train/loss"] for r in steps_1])
    loss_2 = np.array([r["metrics"]["train/loss"] for r in steps_2])
    np.testing.assert_allclose(loss_2, loss_1, rtol=LOSS_RTOL)
    valid_1 = [r["metrics"]["valid/loss"] for r in epochs_1]
    valid_2 = [r["metrics"]["valid/loss"] for r in epochs_2]
    np.testing.assert_allclose(valid_2, valid_1, rtol=LOSS_RTOL)
    # rank 0 alone writes the model and the result; the per-rank RNG states are the only per-rank files
    model_dir = tmp_path / "two" / "model"
    assert (model_dir / "best" / "config.json").exists()
    assert sorted(p.name for p in model_dir.glob("**/rng_state_*.pt")) == ["rng_state_0.pt", "rng_state_1.pt"]
    assert sorted(p.name for p in (tmp_path / "two" / "job").iterdir()) == [
        "behaviors.parquet", "codes.npy", "job.json", "result.json", "sequences.parquet"]  # fmt: skip


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_without_hanging(sequences, tmp_path):
    start = time.monotonic()
    with pytest.raises(RunFailure, match=r"^training failed: a rank exited with code \d+") as failure:
        _run(tmp_path, "fail", sequences, ranks=2, launcher="deepspeed", timeout=300,
             validation_metric={"factory": "tests.training.helpers:metric_failing_on_rank", "kwargs": {"rank": 1}})
    assert "\n" not in str(failure.value)
    assert time.monotonic() - start < 120  # the launcher stopped rank 0; the 300 s timeout never fired
    assert not (tmp_path / "fail" / "job" / "result.json").exists()
