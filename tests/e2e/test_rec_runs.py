"""End-to-end `kedro run` of smb_rec (a discriminative baseline) on a real slice, checked through its outputs."""

import json

import polars as pl

from seqrec_pipeline.io.rec_model import RecModelDataset

METRICS_JSON_KEYS = {"dataset", "pipeline", "model", "tokenizer", "protocol", "n_users", "n_items", "n_test",
                     "metrics", "behavior_accuracy", "measured", "n_samples", "parts", "history_share"}


def _ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_smb_rec_trains_evaluates_and_tracks(project):
    _ok(project.run("run", "--pipeline=smb_rec", "--params=dataset=retail_ci,model=sasrec,rec.epochs=2"))
    items = pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
    report = json.loads((project.path / "data/08_reporting/retail_ci/smb_rec/last_session/sasrec/metrics.json").read_text())
    assert set(report) == METRICS_JSON_KEYS
    assert (report["pipeline"], report["model"], report["tokenizer"], report["protocol"]) == (
        "smb_rec", "sasrec", None, "last_session")
    assert report["n_items"] == items.height and report["n_test"] >= report["n_users"] > 0
    merged = report["metrics"]["merged"]
    assert {"hit@10", "recall@10", "ndcg@10", "mrr@10", "hit@1", "ndcg@5"} <= set(merged)
    for group in (merged, *report["metrics"]["by_behavior"].values()):
        assert all(0.0 <= v <= 1.0 for v in group.values())
        assert group["hit@1"] <= group["hit@5"] <= group["hit@10"]

    preds = pl.read_parquet(project.latest("data/07_model_output/retail_ci/smb_rec/last_session/sasrec/predictions.parquet"))
    assert preds.height == report["n_test"]
    for row in preds.iter_rows(named=True):
        ranked = row["items"]
        assert len(ranked) == len(set(ranked)) == 50  # full catalog scoring: repeat.candidates distinct real items
        assert all(0 <= i < items.height for i in ranked)
    assert (project.path / "data/08_reporting/retail_ci/smb_rec/last_session/sasrec/metrics.png").stat().st_size > 10_000

    model_dir = project.latest("data/06_models/retail_ci/rec-sasrec/last_session/model")
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]  # no pickle
    model = RecModelDataset(str(model_dir)).load()
    summary = json.loads((project.path / "data/06_models/retail_ci/rec-sasrec/last_session/train_summary.json").read_text())
    assert model.n_items == items.height and 1 <= summary["best_epoch"] <= 2

    run = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                         "where e.name = 'retail_ci' and r.status = 'FINISHED'")[0][0]
    metrics = dict(project.mlflow("select key, value from latest_metrics where run_uuid = ?", run))
    assert abs(metrics["test/merged/ndcg_at_10"] - merged["ndcg@10"]) < 1e-9
    assert "epoch/valid/explore_ndcg_at_10" in metrics and "epoch/train/loss" in metrics
    steps = project.mlflow("select count(*) from metrics where run_uuid = ? and key = 'epoch/valid/explore_ndcg_at_10'", run)
    assert steps[0][0] == summary["epochs_run"]

    bad = project.run("run", "--pipeline=smb_rec", "--params=dataset=retail_ci,model=gamer")
    assert bad.returncode == 2 and "unknown model 'gamer' for pipeline smb_rec" in bad.stderr
    assert "Traceback" not in bad.stderr

    # windows (the default) train next-item and cloze models alike; one sample per event on request;
    # a clear message for an unknown mode; a "+behavior" baseline runs like the others (the last one choosing
    # its epoch and its repeat head on the validation sessions of 5 users, the test session still everyone's)
    for model, mode, extra in (("gru4rec", "event", ""), ("bert4rec", "sequence", ""),
                               ("sasrec_behavior", "sequence", ""), ("bert4rec_behavior", "sequence", ""),
                               ("gru4rec_behavior", "sequence", ",eval.valid_users=5")):
        _ok(project.run("run", "--pipeline=smb_rec",
                        f"--params=dataset=retail_ci,model={model},rec.sample_mode={mode},rec.epochs=1{extra}"))
        seq = json.loads((project.path / f"data/08_reporting/retail_ci/smb_rec/last_session/{model}/metrics.json").read_text())
        assert seq["model"] == model and seq["n_test"] == report["n_test"]
    outputs = "data/07_model_output/retail_ci/smb_rec/last_session"
    valid = {m: pl.read_parquet(project.latest(f"{outputs}/{m}/validation_predictions.parquet"))
             for m in ("sasrec_behavior", "gru4rec_behavior")}
    assert valid["sasrec_behavior"]["user_idx"].n_unique() == report["n_users"] > 5
    assert valid["gru4rec_behavior"]["user_idx"].n_unique() == 5
    assert set(valid["gru4rec_behavior"]["user_idx"]) < set(valid["sasrec_behavior"]["user_idx"])
    mixed = pl.read_parquet(project.latest(f"{outputs}/gru4rec_behavior+repeat/predictions.parquet"))
    assert mixed.height == report["n_test"]  # the test session is still every user's
    bad = project.run("run", "--pipeline=smb_rec", "--params=dataset=retail_ci,model=bert4rec,rec.sample_mode=windows")
    assert bad.returncode == 2 and "'rec.sample_mode': Input should be 'sequence' or 'event'" in bad.stderr
    assert "Traceback" not in bad.stderr

    # every evaluated run of the dataset in one table (paths from the catalog)
    result = project.run("compare", "--dataset", "retail_ci")
    _ok(result)
    assert "### retail_ci · last_session (12 runs)" in result.stdout and "| sasrec+repeat |" in result.stdout and "| sasrec |" in result.stdout
    assert "| sasrec_behavior+repeat |" in result.stdout and "| sasrec_behavior |" in result.stdout
    behavior_model = RecModelDataset(str(project.latest("data/06_models/retail_ci/rec-sasrec_behavior/last_session/model"))).load()
    assert behavior_model.name == "sasrec_behavior" and behavior_model.behavior_input is not None
    assert (project.path / "data/08_reporting/retail_ci/comparison.md").read_text().strip() in result.stdout
    assert (project.path / "data/08_reporting/retail_ci/comparison.png").stat().st_size > 0
