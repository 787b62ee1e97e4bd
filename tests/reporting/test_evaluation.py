"""metrics.json of an evaluated run: an evaluation without test samples is a user-facing message, not NaNs."""

import polars as pl
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.reporting.evaluation import metrics_report, report_run

RUN = {"dataset": "shop", "pipeline": "smb_decoder", "model": "gamer", "tokenizer": "cid", "protocol": "last_session",
       "n_items": 5}


def _predictions(rows):
    return pl.DataFrame(rows, schema={"user_idx": pl.Int32, "behavior_idx": pl.Int8, "items": pl.List(pl.Int32),
                                      "targets": pl.List(pl.Int64), "repeat": pl.List(pl.Boolean),
                                      "in_history": pl.List(pl.Boolean)})


def test_no_test_samples_is_an_input_error_with_the_fix():
    with pytest.raises(InputError, match=r"^smb_decoder gamer on shop \(last_session\): no test samples to evaluate; "
                                         r"check the dataset's filters \(min_sessions\) and split.protocol$"):
        report_run(_predictions([]), ["view", "buy"], [1, 5], RUN)


def test_one_sample_is_scored():
    report = metrics_report(_predictions([{"user_idx": 0, "behavior_idx": 1, "items": [3, 1], "targets": [1],
                                          "repeat": [False], "in_history": [False, False]}]),
                            behavior_names=["view", "buy"], ks=[1, 5], **RUN)
    assert report["n_test"] == report["n_users"] == 1
    assert report["metrics"]["merged"]["hit@1"] == 0.0 and report["metrics"]["merged"]["hit@5"] == 1.0
