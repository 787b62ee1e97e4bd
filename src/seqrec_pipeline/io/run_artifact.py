"""A report file that is also an artifact of the active MLflow run, logged from this run's own copy.

kedro-mlflow's ``MlflowArtifactDataset`` saves the wrapped dataset and then uploads the file at its path. Report
files (``metrics.json``, ``train_summary.json``, the plots) are not versioned, so that path is shared by every run
of the project: when two runs overlap, the upload of run A can pick up the file run B wrote in between, and A's
MLflow run then holds B's report. Here the data is saved twice, to the shared path (what a user opens) and to a
private temporary folder, and the private copy is what is logged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import AbstractDataset


class RunArtifactDataset(AbstractDataset[Any, Any]):
    """``dataset``: the wrapped file dataset's catalog entry (with ``filepath``); ``artifact_path``: the folder in
    the run's artifacts. Without an active MLflow run it only saves the file."""

    def __init__(self, dataset: dict[str, Any], artifact_path: str | None = None,
                 metadata: dict[str, Any] | None = None):
        if "filepath" not in dataset:
            raise ValueError("RunArtifactDataset wraps a file dataset: its `dataset` entry needs a `filepath`")
        self._config = dict(dataset)
        self._dataset = AbstractDataset.from_config("file", self._config)
        self._artifact_path = artifact_path
        self.metadata = metadata

    def load(self) -> Any:
        return self._dataset.load()

    def save(self, data: Any) -> None:
        self._dataset.save(data)
        if mlflow.active_run() is None:
            return
        name = Path(self._config["filepath"]).name
        with tempfile.TemporaryDirectory(prefix="seqrec-artifact-") as folder:
            private = Path(folder) / name
            AbstractDataset.from_config("private copy", {**self._config, "filepath": str(private)}).save(data)
            mlflow.log_artifact(str(private), self._artifact_path)

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._config, "artifact_path": self._artifact_path}
