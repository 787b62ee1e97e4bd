"""Training working directories: one per configuration, locked while a run trains in it, resumable."""

import multiprocessing

import numpy as np
import polars as pl
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import TrainingSettings
from seqrec_pipeline.training.fit import RunDirectory, run_fingerprint
from seqrec_pipeline.vocab import TokenVocab

VOCAB = TokenVocab(("view", "buy"), (4, 4))
CODES = np.array([[0, 1], [1, 2], [2, 3]])
SEQUENCES = pl.DataFrame({"user_idx": [0, 1], "item": [[0, 1, 2], [2, 1, 0]]})
TRAIN = {"epochs": 8, "batch_size": 32, "lr": 0.002, "weight_decay": 0.01, "warmup_ratio": 0.1, "patience": 3,
         "select_metric": "ndcg@10", "loss_on_repeats": True, "sample_mode": "auto", "augment_mode": "static", "resume": "auto",
         "log_every": 5, "deepspeed_config": None, "launch": "auto", "launcher": "auto", "ranks": None}


def _fp(codes=CODES, sequences=SEQUENCES, seed=42, **train):
    settings = TrainingSettings.model_validate({
        "model": {"name": "gamer", "preset": "cpu-small", "overrides": {}}, "protocol": "last_session",
        "train_users": "all",
        "max_history": 50, "augment": 0, "seed": seed, "train": TRAIN | train, "beam_size": 20, "valid_users": None})
    return run_fingerprint(sequences, codes, VOCAB, settings)


def test_fingerprint_follows_what_a_checkpoint_depends_on():
    assert _fp() == _fp(epochs=20, patience=9)  # a run may be continued for longer
    assert _fp() != _fp(lr=0.001)
    assert _fp() != _fp(seed=1)
    assert _fp() != _fp(codes=CODES[::-1])  # another SID table means other token meanings
    assert _fp() != _fp(sequences=SEQUENCES.reverse())  # other data


def test_auto_resume_continues_only_an_unfinished_run(tmp_path):
    with RunDirectory(tmp_path, _fp()) as run:
        assert run.begin("auto") is False
        (run.path / "last").mkdir()  # a checkpoint, then the run was interrupted
    with RunDirectory(tmp_path, _fp()) as run:
        assert run.begin("auto") is True
        run.finish(best_epoch=3)
    with RunDirectory(tmp_path, _fp()) as run:  # a finished run starts fresh, without the old checkpoint
        assert run.begin("auto") is False and not (run.path / "last").exists()
        (run.path / "last").mkdir()
    with RunDirectory(tmp_path, _fp()) as run:
        assert run.begin(False) is False and not (run.path / "last").exists()
    # another configuration never sees this directory
    assert RunDirectory(tmp_path, _fp(lr=0.1)).path != RunDirectory(tmp_path, _fp()).path


def _hold(path, fingerprint, ready, release):
    with RunDirectory(path, fingerprint):
        ready.set()
        release.wait(30)


def test_a_second_run_of_the_same_configuration_is_refused_while_the_first_trains(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(tmp_path, _fp(), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(InputError, match="already running"):
            with RunDirectory(tmp_path, _fp()):
                pass
        with RunDirectory(tmp_path, _fp(seed=7)):  # another configuration trains at the same time
            pass
    finally:
        release.set()
        holder.join(30)
    with RunDirectory(tmp_path, _fp()):  # the lock goes with the process
        pass
