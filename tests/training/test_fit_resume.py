import numpy as np
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.training.fit import begin_run, run_fingerprint, should_resume
from seqrec_pipeline.vocab import TokenVocab

VOCAB = TokenVocab(("view", "buy"), (4, 4))
CODES = np.array([[0, 1], [1, 2], [2, 3]])


def _fp(codes=CODES, **train):
    return run_fingerprint(codes, VOCAB, "gamer", "cpu-small", {}, "last_session", 50, 0,
                           {"lr": 0.002, "epochs": 8} | train, seed=42)


def test_fingerprint_follows_what_a_checkpoint_depends_on():
    assert _fp() == _fp(epochs=20, patience=9)  # a run may be continued for longer
    assert _fp() != _fp(lr=0.001)
    assert _fp() != _fp(codes=CODES[::-1])  # another SID table means other token meanings


def test_auto_resume_only_continues_the_same_configuration(tmp_path):
    (tmp_path / "last").mkdir()
    (tmp_path / "fingerprint.txt").write_text(_fp())
    assert should_resume(tmp_path, _fp(), "auto") is True
    (tmp_path / "done.json").write_text("{}")
    assert should_resume(tmp_path, _fp(), "auto") is False  # finished runs start fresh
    (tmp_path / "done.json").unlink()
    with pytest.raises(InputError, match="another configuration"):
        should_resume(tmp_path, _fp(lr=0.1), True)
    assert should_resume(tmp_path, _fp(lr=0.1), "auto") is False
    assert not (tmp_path / "last").exists()
    assert (tmp_path / f"last.interrupted-{_fp()}").is_dir()  # kept aside, not deleted


def test_a_fresh_run_never_resumes_from_a_finished_runs_checkpoint(tmp_path):
    """Run A finished (last + done); run B (other settings) starts and is killed before its first checkpoint;
    rerunning B must start fresh, not continue from A's checkpoint."""
    (tmp_path / "last").mkdir()
    (tmp_path / "done.json").write_text("{}")
    (tmp_path / "fingerprint.txt").write_text(_fp())
    assert begin_run(tmp_path, _fp(sample_mode="event"), "auto") is False  # B starts fresh ...
    assert not (tmp_path / "last").exists() and not (tmp_path / "done.json").exists()  # ... without A's checkpoint
    assert begin_run(tmp_path, _fp(sample_mode="event"), "auto") is False  # B killed early: nothing to resume
    (tmp_path / "last").mkdir()  # B's own first checkpoint, then killed
    assert begin_run(tmp_path, _fp(sample_mode="event", epochs=20), "auto") is True
