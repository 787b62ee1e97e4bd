"""`kedro run` with two data-parallel training ranks (CPU processes joined by gloo, DeepSpeed launcher)."""

import json

import pytest

from seqrec_pipeline.errors import RunFailure, find_input_error


def _ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_smb_decoder_trains_with_two_ranks_and_tracks_one_run(project):
    _ok(project.run("run", "--pipeline=smb_decoder", "--params=dataset=retail_ci,tokenizer=cid,model=qwen3,"
                    "train.epochs=2,train.ranks=2,train.log_every=1,eval.beam_size=10"))
    summary = json.loads((project.path / "data/06_models/retail_ci/qwen3-cid/train_summary.json").read_text())
    assert summary["launch"] == "subprocess" and summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert (project.path / "data/08_reporting/retail_ci/smb_decoder/qwen3-cid/metrics.json").exists()
    runs = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                          "where e.name = 'retail_ci'")
    assert len(runs) == 1  # one MLflow run, by the Kedro process; the ranks never log to MLflow
    losses = project.mlflow("select count(*) from metrics where run_uuid = ? and key = 'train/loss'", runs[0][0])
    assert losses[0][0] == summary["global_step"]  # rank 0's curve only, one point per optimizer step


def test_bad_rank_settings_are_refused_in_one_line(project):
    result = project.run("run", "--pipeline=smb_decoder",
                         "--params=dataset=retail_ci,train.ranks=2,train.launch=in_process")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.ranks=2 needs train.launch=subprocess or auto" in result.stderr


def test_a_failed_rank_is_reported_like_an_input_error():
    failure = RunFailure("training failed: a rank exited with code 1")
    try:
        try:
            raise failure
        except RunFailure as exc:
            raise RuntimeError("kedro node failed") from exc
    except RuntimeError as wrapped:
        assert find_input_error(wrapped) is failure
