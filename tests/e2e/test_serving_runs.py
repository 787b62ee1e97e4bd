"""A trained model in use: `kedro run --pipeline=recommend`, the registered MLflow model loaded back and served
by a real `mlflow models serve` (loopback only), all checked against each other and the evaluation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from tests.e2e.conftest import make_project

pytestmark = pytest.mark.slow
PARAMS = "dataset=retail_ci,tokenizer=cid,train.epochs=1,eval.beam_size=10,max_history=20"
NAME = "seqrec-retail_ci-gamer-cid"


def _ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    project = make_project(tmp_path_factory.mktemp("serving"), shared_data)
    _ok(project.run("run", "--pipeline=smb_decoder", f"--params={PARAMS}"))
    return project


def _log(project, name: str) -> pl.DataFrame:
    return pl.read_parquet(project.latest(f"data/03_primary/retail_ci/{name}.parquet"))


def _requests(project, users: list[str], end: str = "n_events") -> list[dict]:
    """Each user's log (up to ``end``: the whole log, or the split point of the test session) as raw ids."""
    seq = _log(project, "sequences").join(_log(project, "users"), on="user_idx")
    items = _log(project, "items").sort("item_idx")["item_id"].to_numpy()
    names = _log(project, "behaviors").sort("behavior_idx")["behavior"].to_list()
    out = []
    for user in users:
        row = seq.filter(pl.col("user_id") == user).row(0, named=True)
        cut = row[end]
        out.append({"items": items[row["item"][:cut]].tolist(), "behaviors": [names[b] for b in row["behavior"][:cut]],
                    "timestamps": row["timestamp"][:cut], "k": 10})
    return out


def _by_user(answers: list[dict], users: list[str]) -> dict:
    return {(u, r["behavior"]): r for u, a in zip(users, answers, strict=True) for r in a["recommendations"]}


def _check_same(answers: dict, table: pl.DataFrame) -> None:
    assert answers and set(answers) <= {(r["user_id"], r["behavior"]) for r in table.iter_rows(named=True)}
    for row in table.iter_rows(named=True):
        if (row["user_id"], row["behavior"]) in answers:
            got = answers[row["user_id"], row["behavior"]]
            assert got["items"] == row["items"]
            np.testing.assert_allclose(got["scores"], row["scores"], rtol=1e-4, atol=1e-6)


def test_recommend_registered_model_and_server_agree(trained, tmp_path):
    project = trained
    users = _log(project, "users")["user_id"].to_list()
    chosen = users[:3]
    (project.path / "users.txt").write_text("\n".join([*chosen, "no-such-user"]) + "\n")
    _ok(project.run("run", "--pipeline=recommend", f"--params={PARAMS},recommend.users=users.txt"))
    table = pl.read_parquet(project.latest("data/07_model_output/retail_ci/recommend/gamer-cid/recommendations.parquet"))
    summary = json.loads((project.path / "data/07_model_output/retail_ci/recommend/gamer-cid/summary.json").read_text())
    assert summary["n_unknown_users"] == 1 and summary["n_users"] == 3 and summary["repeat_head"] is True
    assert table.height == 3 * 3 and table["user_id"].unique().sort().to_list() == sorted(chosen)
    item_ids = set(_log(project, "items")["item_id"].to_list())
    assert all(len(r) == 10 and set(r) <= item_ids for r in table["items"].to_list())  # raw ids, k of them
    run = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                         "where e.name = 'retail_ci' and r.status = 'FINISHED' order by r.start_time desc")[0][0]
    metrics = dict(project.mlflow("select key, value from latest_metrics where run_uuid = ?", run))
    assert metrics["recommend/n_unknown_users"] == 1 and metrics["recommend/n_users"] == 3

    # the registered MLflow model answers the same histories with the same lists
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project.path / 'mlflow.db'}")
    logged = {Path(a.path).name for a in client.list_artifacts(run, "recommend")}
    assert logged == {"recommendations.parquet", "summary.json"}  # the table is in MLflow too

    served = json.loads((project.path / "data/08_reporting/retail_ci/smb_decoder/gamer-cid+repeat/served_model.json")
                        .read_text())
    assert served["name"] == NAME and served["registered_uri"] == f"models:/{NAME}/{served['version']}"
    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(served["registered_uri"])
    requests = _requests(project, chosen)
    _check_same(_by_user(model.predict(pd.DataFrame(requests)), chosen), table)

    # its stored artifacts decode as the evaluation did: the model alone, on the history before the test session
    from seqrec_pipeline.serving.requests import answer

    predictions = pl.read_parquet(
        project.latest("data/07_model_output/retail_ci/smb_decoder/gamer-cid/predictions.parquet"))
    seq = _log(project, "sequences").join(_log(project, "users"), on="user_idx")
    evaluated = seq.filter(pl.col("user_idx").is_in(predictions["user_idx"].head(4).implode()))["user_id"].to_list()
    before_test = answer(model.unwrap_python_model().recommender, _requests(project, evaluated, "last_session_test"),
                         use_repeat=False)
    names = _log(project, "behaviors").sort("behavior_idx")["behavior"].to_list()
    item_of = _log(project, "items").sort("item_idx")["item_id"].to_numpy()
    compared = 0
    for row in predictions.join(_log(project, "users"), on="user_idx").iter_rows(named=True):
        key = (row["user_id"], names[row["behavior_idx"]])
        if row["user_id"] in evaluated:
            got = _by_user(before_test, evaluated)[key]
            assert got["items"] == item_of[row["items"][:10]].tolist()
            np.testing.assert_allclose(got["scores"], row["scores"][:10], rtol=1e-4)
            compared += 1
    assert compared >= 4

    # a real server on the loopback interface, answering over HTTP
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{project.path / 'mlflow.db'}", OMP_NUM_THREADS="1")
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen([mlflow_cli, "models", "serve", "-m", served["registered_uri"], "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=project.path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the server did not start"
                time.sleep(1)

        def post(rows) -> tuple[int, dict]:
            body = json.dumps({"dataframe_records": rows}).encode()
            request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, body = post(requests)
        assert status == 200
        _check_same(_by_user(body["predictions"], chosen), table)
        empty = {"items": ["no-such-item"], "behaviors": ["view"], "timestamps": [1], "request_behaviors": ["buy"],
                 "k": 3}
        status, body = post([empty])
        assert status == 200 and body["predictions"][0]["fallback"] and body["predictions"][0]["unknown_items"] == 1
        assert len(body["predictions"][0]["recommendations"][0]["items"]) == 3
        good = requests[0]
        for bad, field in [({**good, "behaviors": good["behaviors"][1:]}, "same length"),
                           ({**good, "behaviors": ["like"] * len(good["items"])}, "'behaviors' has unknown"),
                           ({**good, "request_behaviors": ["fly"]}, "'request_behaviors' has unknown"),
                           ({**good, "k": 11}, "'k' must be an integer in 1..10"),
                           ({**good, "items": "not-a-list"}, "items")]:
            status, body = post([bad])
            assert status == 400 and field in body["message"], body
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_recommend_without_a_trained_model_says_how_to_train_one(trained):
    bad = trained.run("run", "--pipeline=recommend", "--params=dataset=retail_ci,tokenizer=cid,model=qwen3")
    assert bad.returncode == 2
    assert "no trained model" in bad.stderr and "kedro run --pipeline=smb_decoder" in bad.stderr
    assert "Traceback" not in bad.stderr



REC_PARAMS = "dataset=retail_ci,model=sasrec,rec.epochs=2"


@pytest.fixture(scope="module")
def baselines(tmp_path_factory, shared_data):
    project = make_project(tmp_path_factory.mktemp("serving_rec"), shared_data)
    _ok(project.run("run", "--pipeline=smb_rec", f"--params={REC_PARAMS}"))
    return project


def test_a_baseline_is_served_like_a_decoder(baselines):
    """`smb_rec` registers its model too; `recommend_rec` and the MLflow model give the same lists, and before the
    test session the model alone gives the evaluation's."""
    project = baselines
    chosen = _log(project, "users")["user_id"].to_list()[:3]
    (project.path / "users.txt").write_text("\n".join(chosen) + "\n")
    _ok(project.run("run", "--pipeline=recommend_rec", f"--params={REC_PARAMS},recommend.users=users.txt"))
    out = "data/07_model_output/retail_ci/recommend/last_session/sasrec"
    table = pl.read_parquet(project.latest(f"{out}/recommendations.parquet"))
    summary = json.loads((project.path / out / "summary.json").read_text())
    assert summary["n_users"] == 3 and summary["repeat_head"] is True and table.height == 3 * 3
    assert all(len(r) == 10 for r in table["items"].to_list())

    import mlflow

    from seqrec_pipeline.serving.requests import answer

    reports = project.path / "data/08_reporting/retail_ci/smb_rec/last_session"
    served = json.loads((reports / "sasrec+repeat/served_model.json").read_text())
    assert served["name"] == "seqrec-retail_ci-sasrec"
    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(served["registered_uri"])
    _check_same(_by_user(model.predict(pd.DataFrame(_requests(project, chosen))), chosen), table)

    predictions = pl.read_parquet(
        project.latest("data/07_model_output/retail_ci/smb_rec/last_session/sasrec/predictions.parquet"))
    seq = _log(project, "sequences").join(_log(project, "users"), on="user_idx")
    evaluated = seq.filter(pl.col("user_idx").is_in(predictions["user_idx"].head(4).implode()))["user_id"].to_list()
    before_test = _by_user(answer(model.unwrap_python_model().recommender,
                                  _requests(project, evaluated, "last_session_test"), use_repeat=False), evaluated)
    names = _log(project, "behaviors").sort("behavior_idx")["behavior"].to_list()
    item_of = _log(project, "items").sort("item_idx")["item_id"].to_numpy()
    compared = 0
    for row in predictions.join(_log(project, "users"), on="user_idx").iter_rows(named=True):
        if row["user_id"] in evaluated:
            got = before_test[row["user_id"], names[row["behavior_idx"]]]
            assert got["items"] == item_of[row["items"][:10]].tolist()
            np.testing.assert_allclose(got["scores"], row["scores"][:10], rtol=1e-4, atol=1e-6)
            compared += 1
    assert compared >= 4

    bad = project.run("run", "--pipeline=recommend_rec", "--params=dataset=retail_ci,model=gru4rec")
    assert bad.returncode == 2 and "no trained model" in bad.stderr and "--pipeline=smb_rec" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = project.run("run", "--pipeline=recommend_rec", "--params=dataset=retail_ci")  # the default model: gamer
    assert bad.returncode == 2 and "unknown model 'gamer' for pipeline recommend_rec" in bad.stderr

def test_the_item_knn_rule_is_served_like_a_model(baselines):
    """`smb_rule` with `model=item_knn` registers the rule (its fitted mixture over its PPMI table); the other rules
    are not packaged; `recommend_rule` and the MLflow model give the same lists; running it before the rule was
    fitted, or for another rule, is one line."""
    project = baselines
    bad = project.run("run", "--pipeline=recommend_rule", "--params=dataset=retail_ci,model=item_knn")
    assert bad.returncode == 2 and "no fitted item_knn rule" in bad.stderr and "--pipeline=smb_rule" in bad.stderr
    assert "Traceback" not in bad.stderr
    _ok(project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=item_knn"))
    fitted = json.loads((project.path / "data/06_models/retail_ci/rule-item_knn/last_session/fitted.json").read_text())
    served = json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_session/item_knn/served_model.json")
                        .read_text())
    assert served["name"] == "seqrec-retail_ci-item_knn" and served["version"] == 1
    import mlflow

    version = mlflow.MlflowClient(f"sqlite:///{project.path / 'mlflow.db'}").get_model_version(served["name"], "1")
    assert version.tags == served["tags"] == {"dataset": "retail_ci", "split.protocol": "last_session"}
    assert set(fitted["explorer"]) == {"window", "width", "last", "decay", "neighbors"} and "gate_bias" in fitted
    assert fitted["explorer"]["neighbors"] == 1000  # repeat.knn_neighbors: the served rule refits with it
    _ok(project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=popularity"))
    assert json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_session/popularity/served_model.json")
                      .read_text()) == {}
    # `kedro compare` says which runs are deployable, and as what
    compared = project.run("compare", "--dataset", "retail_ci")
    _ok(compared)
    rows = {line.split(" | ")[1]: line for line in compared.stdout.splitlines() if line.startswith("| smb_")}
    assert rows["item_knn"].endswith("| models:/seqrec-retail_ci-item_knn/1 |")
    assert rows["sasrec+repeat"].endswith("| models:/seqrec-retail_ci-sasrec/1 |")
    assert rows["sasrec"].endswith("| – |") and rows["popularity"].endswith("| – |")

    chosen = _log(project, "users")["user_id"].to_list()[3:6]
    (project.path / "users.txt").write_text("\n".join(chosen) + "\n")
    _ok(project.run("run", "--pipeline=recommend_rule", "--params=dataset=retail_ci,model=item_knn,"
                                                        "recommend.users=users.txt"))
    out = project.path / "data/07_model_output/retail_ci/recommend/last_session/item_knn"
    table = pl.read_parquet(project.latest(str(out.relative_to(project.path) / "recommendations.parquet")))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_users"] == 3 and summary["repeat_head"] is True and table.height == 3 * 3
    assert all(len(r) == 10 for r in table["items"].to_list())

    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(served["registered_uri"])
    assert model.unwrap_python_model().recommender.kind == "item_knn"
    _check_same(_by_user(model.predict(pd.DataFrame(_requests(project, chosen))), chosen), table)

    bad = project.run("run", "--pipeline=recommend_rule", "--params=dataset=retail_ci,model=tifu")
    assert bad.returncode == 2 and "unknown model 'tifu' for pipeline recommend_rule" in bad.stderr


def test_compare_runs_notebook_executes_on_the_runs(trained):
    """notebooks/compare_runs.ipynb, executed against this project's MLflow store, so it cannot rot."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    from tests.conftest import REPO

    notebook = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    os.environ.update(SEQREC_DATASET="retail_ci", SEQREC_MLFLOW_URI=f"sqlite:///{trained.path / 'mlflow.db'}")
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(trained.path)}}).execute()
    finally:
        for key in ("SEQREC_DATASET", "SEQREC_MLFLOW_URI"):
            os.environ.pop(key)
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    summary = json.loads(printed.split("SUMMARY ", 1)[1].splitlines()[0])
    report = json.loads((trained.path / "data/08_reporting/retail_ci/smb_decoder/gamer-cid/metrics.json").read_text())
    assert summary["evaluated"] == 1 and summary["runs"] >= 1
    assert abs(next(iter(summary["ndcg"].values())) - report["metrics"]["merged"]["ndcg@10"]) < 1e-9
    assert set(summary["behaviors"]) == set(report["metrics"]["by_behavior"])
    assert summary["curves"] == ["epoch/valid/explore_ndcg_at_10", "train/loss"]
    assert summary["registered"] == [f"models:/{NAME}/1"]  # the run's registered model, what to deploy
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in notebook.cells for o in c.get("outputs", []))  # the plots were drawn
