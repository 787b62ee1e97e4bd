"""The smb_decoder pipeline as an Airflow DAG (kedro-airflow + deploy/airflow/dag_template.j2) run by a real Airflow.

Airflow (3.x, with its own pins of SQLAlchemy, pydantic, ...) and this project do not share one environment:
Airflow gets its own virtual environment, made here once and cached (SEQREC_AIRFLOW_VENV, default
~/.cache/seqrec_pipeline/airflow-venv), and every task runs the project's `kedro run --namespaces=<stage>`
in the project's environment. `airflow dags test` runs the DAG in one process against a sqlite metadata
database; nothing listens on a network port.

Minutes long (the first time also the Airflow install), so it runs only when asked: `pytest -m airflow`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

from .conftest import KEDRO, make_project

AIRFLOW_VERSION = "3.3.2"
PARAMS = "dataset=retail_ci,tokenizer=cid,train.epochs=2,eval.beam_size=10,max_history=20"
METRICS = "data/08_reporting/retail_ci/smb_decoder/gamer-cid/metrics.json"
STAGES = {"ingest", "preprocess", "embed", "tokenize", "train", "smb-decoder"}

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


@pytest.fixture(autouse=True)
def _only_when_asked(request):
    if "airflow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("Airflow DAG run: several minutes and its own venv; run it with `pytest -m airflow`")


def airflow_venv() -> Path:
    venv = Path(os.environ.get("SEQREC_AIRFLOW_VENV", Path.home() / ".cache" / "seqrec_pipeline" / "airflow-venv"))
    airflow = venv / "bin" / "airflow"
    if not airflow.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"apache-airflow=={AIRFLOW_VERSION}"], check=True)
    return venv


def _ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_the_generated_dag_reproduces_kedro_run(tmp_path, shared_data):
    venv = airflow_venv()
    for name in ("reference", "dag"):
        (tmp_path / name).mkdir()
    reference = make_project(tmp_path / "reference", shared_data)
    _ok(reference.run("run", "--pipeline=smb_decoder", f"--params={PARAMS}", timeout=900))
    expected = json.loads((reference.path / METRICS).read_text())

    project = make_project(tmp_path / "dag", shared_data)
    home = tmp_path / "airflow"
    _ok(project.run("airflow", "create", "--pipelines=smb_decoder", "--group-by=namespace", f"--target-dir={home}/dags",
                    f"--jinja-file={REPO / 'deploy' / 'airflow' / 'dag_template.j2'}"))
    dag_file = home / "dags" / "seqrec_pipeline_smb_decoder_dag.py"
    source = dag_file.read_text()
    assert all(f'task_id="{stage}"' in source for stage in STAGES), source
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
               AIRFLOW__API__HOST="127.0.0.1", AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
               SEQREC_PROJECT_DIR=str(project.path), SEQREC_KEDRO=KEDRO, SEQREC_PARAMS=PARAMS,
               OMP_NUM_THREADS="1", KEDRO_DISABLE_TELEMETRY="true")  # fmt: skip
    # PYTHONPATH stays: the tasks' kedro must import the code under test (Airflow imports none of it)
    airflow = str(venv / "bin" / "airflow")
    _ok(subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600))
    run = subprocess.run([airflow, "dags", "test", "seqrec-pipeline-smb-decoder"], env=env, capture_output=True,
                         text=True, timeout=1800)  # fmt: skip
    _ok(run)
    with sqlite3.connect(home / "airflow.db") as db:  # Airflow's own record of the run
        states = dict(db.execute("select task_id, state from task_instance where dag_id = ?",
                                 ("seqrec-pipeline-smb-decoder",)).fetchall())  # fmt: skip
    assert states == {stage: "success" for stage in STAGES}

    produced = json.loads((project.path / METRICS).read_text())
    expected.pop("measured"), produced.pop("measured")
    assert produced == expected  # the same metrics.json as one `kedro run`

    # every stage is its own kedro run, so its own MLflow run; the evaluation's carries the test metrics
    runs = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                          "where e.name = 'retail_ci' and r.status = 'FINISHED'")
    assert len(runs) == len(STAGES)
    ndcg = project.mlflow("select value from latest_metrics where key = 'test/merged/ndcg_at_10'")
    assert len(ndcg) == 1 and abs(ndcg[0][0] - produced["metrics"]["merged"]["ndcg@10"]) < 1e-9

