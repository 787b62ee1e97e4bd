"""Two `kedro run --pipeline=smb_decoder` of the same dataset, model and tokenizer, started together with other
seeds: each trains in its own working folder and evaluates the model it trained itself."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

PARAMS = "dataset=retail_ci,tokenizer=cid,train.epochs=2,eval.beam_size=10,max_history=20,train.sample_mode=event"


def _test_metrics(project, run_id: str) -> dict[str, float]:
    rows = project.mlflow("select key, value from latest_metrics where run_uuid = ? and key like 'test/%'", run_id)
    return dict(rows)


def _artifact(project, run_id: str, path: str) -> dict:
    (uri,) = project.mlflow("select artifact_uri from runs where run_uuid = ?", run_id)[0]
    root = Path(urlparse(uri).path) if uri.startswith("file:") else project.path / uri
    return json.loads((root / path).read_text())


def test_two_seeds_at_once_each_evaluate_their_own_model(project):
    # a new MLflow store too: both runs set it up at the same moment
    processes = {seed: project.start("run", "--pipeline=smb_decoder", f"--params={PARAMS},seed={seed}")
                 for seed in (1, 2)}  # fmt: skip
    for seed, process in processes.items():
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, f"seed {seed}: {out[-3000:]}{err[-3000:]}"

    runs = project.mlflow("select r.run_uuid, p.value, t.value from runs r join params p on p.run_uuid = r.run_uuid "
                          "and p.key = 'seed' join tags t on t.run_uuid = r.run_uuid and t.key = 'run_id' "
                          "where r.status = 'FINISHED'")
    by_seed = {int(seed): (run_id, session) for run_id, seed, session in runs}
    assert sorted(by_seed) == [1, 2]  # one MLflow run per seed, each with its own seed

    summaries = {seed: _artifact(project, run_id, "training/train_summary.json")
                 for seed, (run_id, _) in by_seed.items()}  # fmt: skip
    assert summaries[1]["run_dir"] != summaries[2]["run_dir"]  # one working folder per configuration
    metrics = {seed: _test_metrics(project, run_id) for seed, (run_id, _) in by_seed.items()}
    assert metrics[1] != metrics[2]
    for seed, (run_id, session) in by_seed.items():
        report = _artifact(project, run_id, "evaluation/metrics.json")  # what this run wrote
        assert metrics[seed]["test/merged/ndcg_at_10"] == report["metrics"]["merged"]["ndcg@10"]
        # the model this run saved (its version is the run's Kedro session id), evaluated on its own
        again = project.run("run", "--pipeline=evaluate", f"--load-versions=decoder_model:{session}",
                            f"--params={PARAMS},seed={seed}")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        (evaluation,) = project.mlflow("select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
                                       "where t.key = 'pipeline' and t.value = 'evaluate' "
                                       "order by r.start_time desc limit 1")[0]
        assert _test_metrics(project, evaluation) == metrics[seed]
