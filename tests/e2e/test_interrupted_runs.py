"""Ctrl+C during training: the MLflow run reads KILLED and the checkpoint stays resumable; a checkpoint file
replaced by a pickle that would run code is refused on resume (one line, exit 2, nothing run), and such a
failed run reads FAILED."""

from __future__ import annotations

import signal
import time

import torch

from tests.training.helpers import Marker

PARAMS = ("--params=dataset=retail_ci,tokenizer=cid,train.epochs=50,train.patience=50,eval.beam_size=10,"
          "max_history=20,train.sample_mode=event")


def _wait_for(condition, process, what: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout  # a bound on a hang, not a performance check
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.5)


def test_ctrl_c_reads_killed_and_a_tampered_checkpoint_is_refused(project):
    work = project.path / "data" / "06_models" / "retail_ci" / "gamer-cid" / "work"
    process = project.start("run", "--pipeline=smb_decoder", PARAMS)
    # the first epoch's checkpoint is in place (last.tmp is renamed to last once complete)
    _wait_for(lambda: list(work.glob("*/last/mp_rank_00_model_states.pt")), process, "checkpoint")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode not in (0, 2), err[-3000:]
    assert project.mlflow("select status from runs") == [("KILLED",)]
    (last,) = work.glob("*/last")
    assert not (last.parent / "done.json").exists()  # unfinished: the next run resumes from it
    assert not (project.path / "data" / "06_models" / "retail_ci" / "gamer-cid" / "model").exists()

    marker = project.path / "marker"
    for name in ("mp_rank_00_model_states.pt", "rng_state_0.pt"):  # DeepSpeed's file, then the trainer's own
        original = (last / name).read_bytes()
        torch.save({"state": Marker(marker)}, last / name)  # unpickling it would create the marker file
        refused = project.run("run", "--pipeline=smb_decoder", PARAMS)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert [line for line in refused.stderr.splitlines() if line.strip()] == [
            f"seqrec_pipeline: refusing to resume from {last}: {name} holds more than tensors and plain data (it asks "
            f"to run io.open), so loading it could execute code; this trainer did not write it. Delete {last} to "
            "train this configuration from scratch."]
        assert "Traceback" not in refused.stdout + refused.stderr
        assert not marker.exists()
        (last / name).write_bytes(original)

    statuses = project.mlflow("select status from runs order by start_time")
    assert statuses == [("KILLED",), ("FAILED",), ("FAILED",)]  # a run that failed in a node is FAILED
