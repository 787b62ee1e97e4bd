"""The launcher path: a job file run in a child process started by a distributed launcher."""

from __future__ import annotations

import json
import sys

import pytest

from seqrec_pipeline.training import JsonlLogger, TrainConfig, launch_command, launch_training
from seqrec_pipeline.training.distributed import launcher_free_env

from .helpers import BEHAVIORS, CODES, CPU_CONFIG, TINY, VOCAB


def test_launch_commands():
    assert launch_command("job.json", "python") == [sys.executable, "-m", "seqrec_pipeline.training.launch", "job.json"]
    assert launch_command("job.json", "auto", num_gpus=0)[1:] == ["-m", "seqrec_pipeline.training.launch", "job.json"]
    command = launch_command("job.json", "auto", num_gpus=4)  # several GPUs: the deepspeed launcher
    assert command[1:5] == ["-m", "deepspeed.launcher.runner", "--num_gpus", "4"]
    assert command[-3:] == ["--module", "seqrec_pipeline.training.launch", "job.json"]
    command = launch_command("job.json", "torchrun", num_gpus=2)
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    with pytest.raises(ValueError):
        launch_command("job.json", "mpirun")


def test_child_env_drops_rendezvous_variables():
    env = launcher_free_env({"RANK": "0", "MASTER_PORT": "1234", "PATH": "/bin", "WORLD_SIZE": "1"})
    assert env == {"PATH": "/bin"}


def test_launched_job_trains_and_writes_the_result(sequences, tmp_path):
    """torchrun with one CPU process (the multi-GPU code path without GPUs); rank 0 writes the result."""
    train = TrainConfig(output_dir=str(tmp_path / "model"), epochs=2, lr=1e-2, weight_decay=0.01, warmup_ratio=0.1,
                        patience=3, seed=42, micro_batch_size=16, log_every=1, deepspeed_config=str(CPU_CONFIG),
                        progress=False)  # fmt: skip
    result = launch_training(
        tmp_path / "job", sequences, BEHAVIORS, CODES, VOCAB,
        model={"name": "qwen3", "preset": "cpu-small", "overrides": TINY["qwen3"]},
        samples={"protocol": "last_session", "mode": "user", "max_history": 8, "augment": 2,
                 "augment_mode": "static", "seed": 0},
        train=train, launcher="torchrun", num_gpus=1, env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert result["world_size"] == 1 and result["epochs_run"] == 2 and len(result["history"]) == 2
    assert json.loads((tmp_path / "job" / "result.json").read_text()) == result
    assert (tmp_path / "model" / "best" / "config.json").exists() and (tmp_path / "model" / "last").is_dir()
    records = JsonlLogger.read(result["log_path"])
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert len(steps) == result["global_step"] and set(steps[0]["metrics"]) == {
        "train/loss", "train/lr", "train/samples_per_s", "train/tokens_per_s"}  # fmt: skip
