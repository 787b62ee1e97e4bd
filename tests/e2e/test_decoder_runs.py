"""End-to-end `kedro run` of smb_decoder and smb_rule on a real slice, checked through their outputs."""

import json

import polars as pl

from seqrec_pipeline.models.generative import load_model, model_name_of

METRICS_JSON_KEYS = {"dataset", "pipeline", "model", "tokenizer", "protocol", "n_users", "n_items", "n_test",
                     "metrics", "behavior_accuracy", "measured", "n_samples", "parts", "history_share"}


def _ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def _check_metrics(report, n_items):
    assert set(report) == METRICS_JSON_KEYS
    merged = report["metrics"]["merged"]
    assert {"hit@10", "recall@10", "ndcg@10", "mrr@10", "hit@1", "ndcg@5"} <= set(merged)
    for group in (merged, *report["metrics"]["by_behavior"].values()):
        assert all(0.0 <= v <= 1.0 for v in group.values())
        assert group["hit@1"] <= group["hit@5"] <= group["hit@10"]
        assert group["recall@10"] <= group["hit@10"]
    assert report["n_items"] == n_items and report["n_test"] >= report["n_users"] > 0


def test_smb_decoder_trains_evaluates_and_tracks(project):
    _ok(project.run("run", "--pipeline=smb_decoder",
                    "--params=dataset=retail_ci,tokenizer=cid,train.epochs=2,train.log_every=1,eval.beam_size=10,max_history=20"))
    items = pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
    report = json.loads((project.path / "data/08_reporting/retail_ci/smb_decoder/gamer-cid/metrics.json").read_text())
    _check_metrics(report, items.height)
    assert (report["pipeline"], report["model"], report["tokenizer"], report["protocol"]) == (
        "smb_decoder", "gamer", "cid", "last_session")
    assert set(report["metrics"]["by_behavior"]) <= {"view", "cart", "buy"}

    preds = pl.read_parquet(project.latest("data/07_model_output/retail_ci/smb_decoder/gamer-cid/predictions.parquet"))
    assert preds.height == report["n_test"]
    for row in preds.iter_rows(named=True):
        ranked = [i for i in row["items"] if i >= 0]
        assert len(ranked) == len(set(ranked)) == 10  # the whole beam (eval.beam_size=10), each item once
        assert all(0 <= i < items.height for i in ranked)
        assert row["scores"] == sorted(row["scores"], reverse=True)
    assert (project.path / "data/08_reporting/retail_ci/smb_decoder/gamer-cid/metrics.png").stat().st_size > 10_000

    # the same model with its repeat / explore mixture (fitted on the validation session), reported beside it
    mixed = json.loads(
        (project.path / "data/08_reporting/retail_ci/smb_decoder/gamer-cid+repeat/metrics.json").read_text())
    _check_metrics(mixed, items.height)
    assert mixed["model"] == "gamer+repeat" and mixed["n_test"] == report["n_test"]
    head = json.loads(
        (project.path / "data/08_reporting/retail_ci/smb_decoder/gamer-cid+repeat/repeat_head.json").read_text())
    assert set(head) == {"scorer", "gate_bias", "gate_slope", "temperature", "validation", "ranker", "successors",
                         "cooccurrence"}
    assert head["ranker"] is None or len(head["ranker"]["weights"]) == 3  # one row per requested behavior
    # the recent items' successors: a weight per requested behavior from the grid, or none at all; the window from its grid
    succ = head["successors"]
    assert succ is None or (len(succ["weight"]) == 3 and all(0 <= w < 1 for w in succ["weight"])
                            and any(w > 0 for w in succ["weight"]) and succ["width"] == 50
                            and succ["window"] in (1, 2, 3, 5) and succ["decay"] == 0.7)
    # the co-occurring items: none, or a weight per requested behavior and a scale from their grids
    cooc = head["cooccurrence"]
    assert cooc is None or (len(cooc["weight"]) == 3 and any(w > 0 for w in cooc["weight"])
                            and cooc["scale"] in (0.25, 1.0) and 0 < cooc["width"] <= 50 and cooc["window"] == 3)
    parts = report["parts"]
    assert parts["repeat"]["n_samples"]["merged"] + parts["explore"]["n_samples"]["merged"] >= report["n_test"]
    assert 0.0 <= report["history_share"]["merged"] <= 1.0

    model = load_model(project.latest("data/06_models/retail_ci/gamer-cid/model"))
    assert model.config.model_type == "seqrec_gamer"
    assert model.config.seqrec_protocol == "last_session"  # the split it was trained on travels with it

    run = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                         "where e.name = 'retail_ci' and r.status = 'FINISHED'")[0][0]
    metrics = dict(project.mlflow("select key, value from latest_metrics where run_uuid = ?", run))
    assert abs(metrics["test/merged/ndcg_at_10"] - report["metrics"]["merged"]["ndcg@10"]) < 1e-9
    steps = project.mlflow("select count(*) from metrics where run_uuid = ? and key = 'train/loss'", run)[0][0]
    assert steps >= 2  # a curve, not a single point
    assert "epoch/valid/explore_ndcg_at_10" in metrics and "epoch/valid/loss" in metrics
    # item_head / item_input: auto are recorded as what they resolved to (on for this small catalog); the model
    # found its catalog's items (the keys travel with the weights)
    params = dict(project.mlflow("select key, value from params where run_uuid = ?", run))
    assert model.config.item_head is True and params["model.item_head"] == "True"
    assert model.config.item_input is True and params["model.item_input"] == "True"
    assert bool((model.catalog_keys >= 0).all()) and len(model.catalog_keys.unique()) == model.config.n_items
    assert {"train/lr", "train/samples_per_s", "train/tokens_per_s"} <= set(metrics)
    assert {"test/repeat/merged/ndcg_at_10", "test/explore/merged/ndcg_at_10", "test/history_share/merged",
            "test_repeat/merged/ndcg_at_10"} <= set(metrics)
    assert abs(metrics["test_repeat/merged/ndcg_at_10"] - mixed["metrics"]["merged"]["ndcg@10"]) < 1e-9


def test_smb_rule_baseline_writes_its_own_metrics(project):
    _ok(project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=popularity"))
    items = pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
    report = json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_session/popularity/metrics.json").read_text())
    _check_metrics(report, items.height)
    assert report["tokenizer"] is None and report["model"] == "popularity"
    assert report["metrics"]["merged"]["hit@10"] > 0  # popular items do get bought/viewed
    # the personal recency-and-frequency rule, fitted on the validation session
    _ok(project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=tifu"))
    tifu = json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_session/tifu/metrics.json").read_text())
    _check_metrics(tifu, items.height)
    assert tifu["parts"]["repeat"]["merged"]["hit@10"] > 0.5  # history items come back
    # co-occurring items as the explorer of the same mixture: new items in the lists, history items first
    _ok(project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=item_knn"))
    knn = json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_session/item_knn/metrics.json")
                     .read_text())
    _check_metrics(knn, items.height)
    assert knn["parts"]["repeat"]["merged"]["hit@10"] > 0.5 and 0 < knn["history_share"]["merged"] < 1
    # the same rule on the other protocol gets its own folder: both reports stay, compare lists both
    _ok(project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=popularity,"
                                                  "split.protocol=last_event"))
    on_event = json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_event/popularity/metrics.json")
                          .read_text())
    again = json.loads((project.path / "data/08_reporting/retail_ci/smb_rule/last_session/popularity/metrics.json")
                       .read_text())
    assert (on_event["protocol"], again["protocol"]) == ("last_event", "last_session")
    assert again == report
    compared = project.run("compare", "--dataset", "retail_ci")
    _ok(compared)
    assert "### retail_ci · last_event (1 runs)" in compared.stdout
    assert "### retail_ci · last_session (3 runs)" in compared.stdout
    # the baselines' predictions (one folder per protocol) are found: paired differences to the best run
    session_table = compared.stdout.split("### retail_ci · last_session")[1]
    header = next(line for line in session_table.splitlines() if line.startswith("| pipeline"))
    assert "| Δ vs best | Δ ±95% |" in header
    bad = project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=gamer")
    assert bad.returncode == 2 and "unknown model 'gamer' for pipeline smb_rule" in bad.stderr


def test_mb_decoder_and_single_behavior_decoder_use_last_event(project):
    _ok(project.run("run", "--pipeline=mb_decoder",
                    "--params=dataset=retail_ci,tokenizer=cid,model=qwen3,train.epochs=1,eval.beam_size=10"))
    report = json.loads((project.path / "data/08_reporting/retail_ci/mb_decoder/qwen3-cid/metrics.json").read_text())
    seq = pl.read_parquet(project.latest("data/03_primary/retail_ci/sequences.parquet"))
    assert report["protocol"] == "last_event" and report["pipeline"] == "mb_decoder"
    assert report["n_users"] == report["n_test"] == int((seq["last_event_test"] >= 0).sum())  # one target each
    assert 0.0 <= report["behavior_accuracy"] <= 1.0  # behavior-item decoding: the model picks the behavior
    # the newest qwen3-cid model is now a last_event one: the session-wise evaluation refuses it
    bad = project.run("run", "--pipeline=evaluate", "--params=dataset=retail_ci,tokenizer=cid,model=qwen3")
    assert bad.returncode == 2 and "trained on the last_event split" in bad.stderr
    assert "kedro run --pipeline=smb_decoder" in bad.stderr

    _ok(project.run("run", "--pipeline=decoder",
                    "--params=dataset=taobao_single,tokenizer=rqkmeans,model=tiger,train.epochs=1,eval.beam_size=10"))
    report = json.loads(
        (project.path / "data/08_reporting/taobao_single/decoder/tiger-rqkmeans/metrics.json").read_text())
    assert report["protocol"] == "last_event" and list(report["metrics"]["by_behavior"]) == ["interaction"]
    vocab = json.loads((project.path / "data/05_model_input/taobao_single/rqkmeans/sid_vocab.json").read_text())
    assert vocab["use_behavior_token"] is False


def test_training_through_the_launcher_subprocess(project):
    """The multi-GPU path (a launched job, Kedro not re-run per rank), exercised with one CPU process; every
    choice made on the validation sessions of 6 users."""
    _ok(project.run("run", "--pipeline=smb_decoder", "--params=dataset=retail_ci,tokenizer=cid,model=qwen3,"
                    "train.epochs=2,train.launch=subprocess,train.log_every=1,eval.beam_size=10,eval.valid_users=6"))
    summary = json.loads((project.path / "data/06_models/retail_ci/qwen3-cid/train_summary.json").read_text())
    assert summary["launch"] == "subprocess" and summary["epochs_run"] == 2
    report = json.loads((project.path / "data/08_reporting/retail_ci/smb_decoder/qwen3-cid/metrics.json").read_text())
    outputs = "data/07_model_output/retail_ci/smb_decoder/qwen3-cid"
    assert pl.read_parquet(project.latest(f"{outputs}/validation_predictions.parquet"))["user_idx"].n_unique() == 6
    assert pl.read_parquet(project.latest(f"{outputs}+repeat/predictions.parquet")).height == report["n_test"]
    run = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                         "where e.name = 'retail_ci' and r.status = 'FINISHED'")[0][0]
    replayed = project.mlflow(
        "select count(*) from metrics where run_uuid = ? and key = 'epoch/valid/explore_ndcg_at_10'", run)
    assert replayed[0][0] == 2  # the child's per-epoch log replayed into this run's MLflow curves


def test_smb_decoder_runs_the_session_variants(project):
    """`model=qwen3_session` / `gamer_session` run end to end (sessions reach training and beam search)."""
    for name in ("qwen3_session", "gamer_session"):
        _ok(project.run("run", "--pipeline=smb_decoder", f"--params=dataset=retail_ci,tokenizer=cid,model={name},"
                        "train.epochs=1,eval.beam_size=10,max_history=20"))
        items = pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
        report = json.loads(
            (project.path / f"data/08_reporting/retail_ci/smb_decoder/{name}-cid/metrics.json").read_text())
        _check_metrics(report, items.height)
        assert report["model"] == name
        model = load_model(project.latest(f"data/06_models/retail_ci/{name}-cid/model"))
        assert model.config.model_type == f"seqrec_{name}" and model.config.session_mask


def test_smb_decoder_runs_the_moe_variants(project):
    """`model=qwen3_moe` / `gamer_action_moe` / `qwen3_session_moe` (slot-routed sparse FFNs) train one epoch and
    evaluate end to end; each stored model comes back as itself, with its experts."""
    items = None
    for name in ("qwen3_moe", "gamer_action_moe", "qwen3_session_moe"):
        _ok(project.run("run", "--pipeline=smb_decoder", f"--params=dataset=retail_ci,tokenizer=cid,model={name},"
                        "train.epochs=1,eval.beam_size=10,max_history=20"))
        items = items if items is not None else pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
        report = json.loads(
            (project.path / f"data/08_reporting/retail_ci/smb_decoder/{name}-cid/metrics.json").read_text())
        _check_metrics(report, items.height)
        assert report["model"] == name
        model = load_model(project.latest(f"data/06_models/retail_ci/{name}-cid/model"))
        assert model.config.model_type == f"seqrec_{name}" and model_name_of(model.config) == name
        assert model.config.session_mask == (name == "qwen3_session_moe")
        assert model.config.ffn_experts == ("behavior_slot" if name == "gamer_action_moe" else "slot")


def test_tiger_mb_predicts_the_behavior_and_evaluates_end_to_end(project):
    """`model=tiger_mb` (TIGER_MB): the behavior token is a training target, so mb_decoder can report how often
    the model's own next behavior is right; the stored model comes back as tiger_mb."""
    _ok(project.run("run", "--pipeline=mb_decoder",
                    "--params=dataset=retail_ci,tokenizer=cid,model=tiger_mb,train.epochs=1,eval.beam_size=10"))
    report = json.loads(
        (project.path / "data/08_reporting/retail_ci/mb_decoder/tiger_mb-cid/metrics.json").read_text())
    assert report["model"] == "tiger_mb" and report["protocol"] == "last_event"
    assert 0.0 <= report["behavior_accuracy"] <= 1.0 and report["metrics"]["merged"]["ndcg@10"] >= 0.0
    model = load_model(project.latest("data/06_models/retail_ci/tiger_mb-cid/model"))
    assert model.config.predict_behavior and model_name_of(model.config) == "tiger_mb"


def test_mbgen_trains_and_evaluates_end_to_end(project):
    """`model=mbgen` (the PBATransformer): one epoch on the small slice, behavior-item and fixed-behavior decoding
    through mb_decoder; the stored checkpoint comes back as mbgen with its sparse decoder."""
    _ok(project.run("run", "--pipeline=mb_decoder",
                    "--params=dataset=retail_ci,tokenizer=cid,model=mbgen,train.epochs=1,eval.beam_size=10"))
    items = pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
    report = json.loads((project.path / "data/08_reporting/retail_ci/mb_decoder/mbgen-cid/metrics.json").read_text())
    _check_metrics(report, items.height)
    assert report["model"] == "mbgen" and report["protocol"] == "last_event"
    assert 0.0 <= report["behavior_accuracy"] <= 1.0
    preds = pl.read_parquet(project.latest("data/07_model_output/retail_ci/mb_decoder/mbgen-cid/predictions.parquet"))
    assert preds.height == report["n_test"]
    assert all(len({i for i in row if i >= 0}) == 10 for row in preds["items"])  # the whole beam, each item once
    model = load_model(project.latest("data/06_models/retail_ci/mbgen-cid/model"))
    assert model_name_of(model.config) == "mbgen" and model.config.predict_behavior
    assert model.decoder.block[0].layer[-1].experts.gate_up_proj.shape[0] == model.config.num_slots + 1
