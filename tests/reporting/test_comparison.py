"""`kedro compare`: every evaluated run of a dataset in one table per protocol, best first (the runs and
predictions come as the catalog's partitioned datasets hand them over: partition id -> loader)."""

import numpy as np
import polars as pl
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.reporting.comparison import collect_metrics, comparison_figure, latest_predictions, markdown_tables


def _write(runs, pipeline, variant, model, tokenizer, protocol, ndcg, by_behavior, accuracy=None):
    metrics = lambda v: {f"{m}@{k}": v for m in ("hit", "recall", "ndcg", "mrr") for k in (1, 5, 10)}
    report = {"dataset": "shop", "pipeline": pipeline, "model": model, "tokenizer": tokenizer, "protocol": protocol,
              "n_users": 3, "n_items": 9, "n_test": 4,
              "metrics": {"merged": metrics(ndcg), "by_behavior": {b: metrics(v) for b, v in by_behavior.items()}},
              "behavior_accuracy": accuracy, "measured": "2026-12-01 10:00"}
    runs[f"{pipeline}/{variant}/"] = lambda: report


def _reports(runs=None):
    runs = {} if runs is None else runs
    _write(runs, "smb_rule", "recent", "recent", None, "last_session", 0.2, {"view": 0.1, "buy": 0.4})
    _write(runs, "smb_decoder", "gamer-rqkmeans", "gamer", "rqkmeans", "last_session", 0.3, {"view": 0.25})
    _write(runs, "mb_decoder", "gamer-rqkmeans", "gamer", "rqkmeans", "last_event", 0.05, {"buy": 0.05}, 0.7)
    return runs


def test_collect_sorts_within_protocol_and_keeps_every_behavior(tmp_path):
    frame = collect_metrics(_reports(), {})
    assert frame["protocol"].to_list() == ["last_event", "last_session", "last_session"]
    assert frame["model"].to_list() == ["gamer", "gamer", "recent"]  # 0.3 before 0.2 in last_session
    assert frame["ndcg@10"].to_list() == [0.05, 0.3, 0.2]
    assert frame["buy ndcg@10"].to_list() == [0.05, None, 0.4]  # gamer had no buy samples: missing, not 0
    assert frame["behavior_accuracy"].to_list() == [0.7, None, None]


def test_markdown_one_table_per_protocol(tmp_path):
    text = markdown_tables(collect_metrics(_reports(), {}, k=5), "shop")
    assert text.count("### shop · ") == 2
    session = text.split("### shop · last_session")[1]
    lines = [line for line in session.splitlines() if line.startswith("| ")]
    assert lines[0] == "| pipeline | model | tokenizer | n_test | ndcg@5 | hit@5 | view ndcg@5 | buy ndcg@5 | measured |"
    assert lines[1].startswith("| smb_decoder | gamer | rqkmeans | 4 | 0.3000 | 0.3000 | 0.2500 | – |")
    assert lines[2].startswith("| smb_rule | recent | – | 4 | 0.2000 | 0.2000 | 0.1000 | 0.4000 |")
    assert "behavior_accuracy" in text.split("### shop · last_session")[0]  # only the last_event table has it


def test_the_registered_model_of_each_served_run_is_listed():
    """A run folder whose run registered an MLflow model shows its URI; an unpackaged run ({}) or an unreadable
    file shows none, and a protocol without any loses the column."""
    served = {"smb_decoder/gamer-rqkmeans/": lambda: {"name": "seqrec-shop-gamer-rqkmeans", "version": 3,
                                                      "registered_uri": "models:/seqrec-shop-gamer-rqkmeans/3"},
              "smb_rule/recent/": lambda: {},
              "mb_decoder/gamer-rqkmeans/": lambda: (_ for _ in ()).throw(ValueError("truncated JSON"))}
    frame = collect_metrics(_reports(), {}, served=served)
    assert frame["served"].to_list() == [None, "models:/seqrec-shop-gamer-rqkmeans/3", None]
    text = markdown_tables(frame, "shop")
    session, event = text.split("### shop · last_session")[1], text.split("### shop · last_session")[0]
    assert session.splitlines()[2].endswith("| measured | served |")
    assert "| models:/seqrec-shop-gamer-rqkmeans/3 |" in session and "served" not in event


def test_unreadable_runs_are_skipped_and_no_run_is_a_message():
    runs = _reports()
    runs["smb_rec/sasrec/"] = lambda: {"metrics": {"merged": {"ndcg@10": float("nan")}}}  # a 0-sample evaluation
    runs["smb_rec/gru4rec/"] = lambda: (_ for _ in ()).throw(ValueError("truncated JSON"))
    frame = collect_metrics(runs, {})
    assert sorted(frame["variant"].to_list()) == ["gamer-rqkmeans", "gamer-rqkmeans", "recent"]
    with pytest.raises(InputError, match="no readable evaluated run"):
        collect_metrics({}, {})
    with pytest.raises(InputError, match="no ndcg@20"):
        collect_metrics(_reports(), {}, k=20)


def test_latest_predictions_version_per_run():
    # decoder pipelines: <pipeline>/<variant>; baselines: <pipeline>/<protocol>/<variant> (as their metrics.json)
    parts = {"smb_rule/last_session/recent/predictions.parquet/2026-01-01T00.00.00.000Z/": "old",
             "smb_rule/last_session/recent/predictions.parquet/2026-02-01T00.00.00.000Z/": "new",
             "smb_rule/last_event/recent/predictions.parquet/2026-01-01T00.00.00.000Z/": "event",
             "smb_rec/last_session/sasrec+repeat/predictions.parquet/2026-01-05T00.00.00.000Z/": "only",
             "smb_rec/last_session/sasrec/validation_predictions.parquet/2026-03-05T00.00.00.000Z/validation_":
                 "not a test run",
             "smb_decoder/gamer-rqkmeans/predictions.parquet/2026-01-02T00.00.00.000Z/": "decoder",
             "smb_decoder/gamer-rqkmeans/validation_predictions.parquet/2026-01-02T00.00.00.000Z/validation_": "no"}
    assert latest_predictions(parts) == {"smb_rule/last_session/recent": "new", "smb_rule/last_event/recent": "event",
                                         "smb_rec/last_session/sasrec+repeat": "only",
                                         "smb_decoder/gamer-rqkmeans": "decoder"}


def _predictions(predictions, pipeline, variant, items, targets, users=None):
    users = users or list(range(len(items)))
    table = pl.DataFrame({"user_idx": users, "behavior_idx": [0] * len(items), "items": items, "targets": targets},
                         schema_overrides={"user_idx": pl.Int32, "behavior_idx": pl.Int8})
    predictions[f"{pipeline}/{variant}/predictions.parquet/2026-01-01T00.00.00.000Z/"] = lambda: table


def test_intervals_and_paired_difference_by_hand():
    reporting, predictions = {}, {}
    targets = [[1], [2], [3], [4]]
    # best: hits at rank 1 for samples 0 and 1 -> per-sample NDCG [1, 1, 0, 0]
    _write(reporting, "smb_rule", "recent", "recent", None, "last_session", 0.5, {"buy": 0.5})
    _predictions(predictions, "smb_rule", "recent", [[1, 9], [2, 9], [9, 8], [9, 8]], targets)
    # other: a hit at rank 1 for sample 0 only -> [1, 0, 0, 0]; paired differences [0, -1, 0, 0]
    _write(reporting, "smb_rec", "sasrec", "sasrec", None, "last_session", 0.25, {"buy": 0.25})
    _predictions(predictions, "smb_rec", "sasrec", [[1, 9], [9, 8], [9, 8], [9, 8]], targets)
    # predictions that do not reproduce the metrics (another run): no intervals
    _write(reporting, "smb_rule", "popularity", "popularity", None, "last_session", 0.1, {"buy": 0.1})
    _predictions(predictions, "smb_rule", "popularity", [[9], [9], [9], [9]], targets)
    frame = collect_metrics(reporting, predictions, k=10)
    rows = {r["model"]: r for r in frame.iter_rows(named=True)}
    z = 1.959964
    assert abs(rows["recent"]["±95%"] - z * np.std([1, 1, 0, 0], ddof=1) / 2) < 1e-9
    assert rows["recent"]["Δ vs best"] is None
    assert abs(rows["sasrec"]["Δ vs best"] + 0.25) < 1e-12
    assert abs(rows["sasrec"]["Δ ±95%"] - z * np.std([0, -1, 0, 0], ddof=1) / 2) < 1e-9
    assert rows["popularity"]["±95%"] is None and rows["popularity"]["Δ vs best"] is None
    text = markdown_tables(frame, "shop")
    assert "| smb_rec | sasrec | – | 4 | 0.2500 | 0.4900 | -0.2500 | 0.4900 |" in text


def test_figure_has_one_panel_per_protocol_and_a_bar_per_run():
    frame = collect_metrics(_reports(), {})
    fig = comparison_figure(frame, "shop")
    bars = {ax.get_title(): [p.get_width() for p in ax.patches] for ax in fig.axes}
    assert bars == {"shop · last_event · 4 test samples": [0.05],
                    "shop · last_session · 4 test samples": [0.2, 0.3]}  # best on top = drawn last
