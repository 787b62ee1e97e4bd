"""Report files logged to MLflow from the run's own copy, not from the path every run of the project shares."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import mlflow
import pytest

from seqrec_pipeline.io.run_artifact import RunArtifactDataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

JSON = {"type": "seqrec_pipeline.io.json_file.JSONDataset", "save_args": {"indent": 2}}


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("artifacts")
    yield tmp_path
    while mlflow.active_run():
        mlflow.end_run()


def _logged(run_id: str, path: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def test_the_run_logs_what_it_saved_even_when_another_run_rewrites_the_shared_file(tracking, monkeypatch):
    shared = tracking / "reports" / "metrics.json"
    mine = RunArtifactDataset({**JSON, "filepath": str(shared)}, artifact_path="evaluation")
    real_log = mlflow.log_artifact

    def interleaved(local_path, artifact_path=None):  # the other run saves between this save and its upload
        shared.write_text(json.dumps({"ndcg": 0.2}))
        real_log(local_path, artifact_path)

    monkeypatch.setattr(mlflow, "log_artifact", interleaved)
    with mlflow.start_run() as run:
        mine.save({"ndcg": 0.1})
    assert json.loads(_logged(run.info.run_id, "evaluation/metrics.json").read_text()) == {"ndcg": 0.1}
    assert json.loads(shared.read_text()) == {"ndcg": 0.2}  # the shared file holds the last writer's report
    assert mine.load() == {"ndcg": 0.1}  # and this run still reads its own (JSONDataset keeps its text)


def test_without_an_active_run_only_the_file_is_written(tracking):
    target = tracking / "summary.json"
    RunArtifactDataset({**JSON, "filepath": str(target)}, artifact_path="training").save({"epochs": 2})
    assert json.loads(target.read_text()) == {"epochs": 2}
    assert mlflow.active_run() is None and mlflow.search_runs(search_all_experiments=True).empty


def test_a_plot_is_written_and_logged(tracking):
    target = tracking / "metrics.png"
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    with mlflow.start_run() as run:
        RunArtifactDataset({"type": "matplotlib.MatplotlibDataset", "filepath": str(target)},
                           artifact_path="evaluation").save(figure)
    logged = _logged(run.info.run_id, "evaluation/metrics.png")
    assert target.read_bytes()[:8] == logged.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dataset_without_a_file_is_refused():
    with pytest.raises(ValueError, match="needs a `filepath`"):
        RunArtifactDataset({"type": "seqrec_pipeline.io.json_file.JSONDataset"})
