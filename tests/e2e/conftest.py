"""A throwaway copy of the project (conf + data skeleton) for real `kedro run`s."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqrec_pipeline.training.distributed import launcher_free_env
from tests.conftest import REPO

KEDRO = str(Path(sys.executable).parent / "kedro")

CI_DATASETS = {
    "taobao_ci": {
        "events": "taobao_head43.csv", "header": False,
        "column_names": ["user_id", "item_id", "category_id", "behavior", "timestamp"],
        "behaviors": {"pv": 0, "fav": 1, "cart": 1, "buy": 2},
        "time_window": ["2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00"],
        "filters": {"min_user_events": 2, "min_item_events": 2},
    },
    "taobao_single": {  # the same raw log read as single-behavior data (no behavior column used)
        "events": "taobao_head43.csv", "header": False,
        "column_names": ["user_id", "item_id", "category_id", "behavior", "timestamp"],
        "filters": {"min_user_events": 2, "min_item_events": 2},
    },
    "retail_ci": {
        "events": "retailrocket_ci150.csv", "columns": {"user_id": "user", "item_id": "item"},
        "behaviors": {"view": 0, "cart": 1, "buy": 2}, "filters": {"min_user_events": 3, "min_item_events": 2},
    },
}


class Project:
    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def _env() -> dict[str, str]:
        # without the rendezvous variables an in-process training test of this worker may have set: a kedro run
        # sets up its own process group (inheriting MASTER_PORT, it would collide with this process's)
        return dict(launcher_free_env(), OMP_NUM_THREADS="1", KEDRO_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1",
                    COLUMNS="200")

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([KEDRO, *args], cwd=self.path, capture_output=True, text=True, timeout=timeout,
                              env=self._env())

    def start(self, *args: str) -> subprocess.Popen:
        """A `kedro` command running in the background (communicate() for its output)."""
        return subprocess.Popen([KEDRO, *args], cwd=self.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self._env())

    def latest(self, layer_path: str) -> Path:
        """The newest version of a versioned dataset file."""
        versions = sorted((self.path / layer_path).glob("*/" + Path(layer_path).name))
        assert versions, f"no version of {layer_path} was written"
        return versions[-1]

    def mlflow(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.path / "mlflow.db") as db:
            return db.execute(sql, params).fetchall()


@pytest.fixture
def project(tmp_path, shared_data) -> Project:
    return make_project(tmp_path, shared_data)


def make_project(tmp_path: Path, shared_data: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(REPO / name, root / name)
    (root / "src").mkdir()  # Kedro wants it; the code under test is the installed package
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    for layer in sorted(p.name for p in (REPO / "data").iterdir() if p.is_dir()):
        (root / "data" / layer).mkdir(parents=True)
    for name, decl in CI_DATASETS.items():
        raw = root / "data" / "01_raw" / name
        raw.mkdir()
        shutil.copy(shared_data / "ci" / decl["events"], raw / decl["events"])
    (root / "conf" / "local" / "parameters_datasets.yml").write_text(yaml.safe_dump({"datasets": CI_DATASETS}, sort_keys=False))
    return Project(root)
