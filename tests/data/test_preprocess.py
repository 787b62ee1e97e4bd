import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqrec_pipeline.data.preprocess import build_primary, k_core
from seqrec_pipeline.dataset_spec import FilterSpec
from seqrec_pipeline.errors import InputError

LEVELS = {"view": 0, "cart": 1, "buy": 2}
NO_FILTER = FilterSpec(min_user_events=1, min_item_events=1, min_sessions=3)


def events(rows, session_ids=None):
    """rows: (user, item, behavior, timestamp)."""
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "timestamp"], orient="row").with_columns(
        pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8), pl.col("timestamp").cast(pl.Int64),
        pl.Series("session_id", session_ids, dtype=pl.Utf8) if session_ids else pl.lit(None, dtype=pl.Utf8).alias(
            "session_id"),
        pl.int_range(1, len(rows) + 1, dtype=pl.Int64).alias("source_row"),
    )
    return frame.select("user_id", "item_id", "behavior", "timestamp", "session_id", "source_row")


def test_dedup_tie_order_sessions_and_splits_by_hand():
    minute = 60
    rows = [
        ("u", "a", "view", 0), ("u", "a", "view", 0),           # exact duplicate -> dropped
        ("u", "a", "buy", 10), ("u", "a", "cart", 10),          # same second: ordered by level (cart < buy)
        ("u", "b", "view", 10 + 31 * minute),                   # > 30 min gap: session 1
        ("u", "c", "view", 10 + 90 * minute), ("u", "b", "buy", 10 + 91 * minute),  # session 2
        ("u", "d", "view", 10 + 200 * minute),                  # session 3 (last)
    ]
    primary = build_primary(events(rows), LEVELS, NO_FILTER, session_gap_minutes=30)
    seq = primary.sequences.row(0, named=True)
    assert primary.stats["n_duplicates"] == 1
    assert seq["item"] == [0, 0, 0, 1, 2, 1, 3]  # dense ids in id order: a b c d
    assert seq["behavior"] == [0, 1, 2, 0, 0, 2, 0]
    assert seq["session"] == [0, 0, 0, 1, 2, 2, 3]
    assert (seq["last_event_valid"], seq["last_event_test"]) == (5, 6)
    assert (seq["last_session_valid"], seq["last_session_test"]) == (4, 6)
    assert primary.items["item_id"].to_list() == ["a", "b", "c", "d"]
    assert primary.behaviors.filter(pl.col("is_target"))["behavior"].to_list() == ["buy"]


def test_given_sessions_cut_where_the_id_changes():
    rows = [("u", "a", "view", t) for t in range(6)]
    primary = build_primary(events(rows, ["s1", "s1", "s2", "s2", "s3", "s4"]), LEVELS, NO_FILTER, 30)
    assert primary.sequences["session"][0].to_list() == [0, 0, 1, 1, 2, 3]


def test_users_with_few_sessions_are_out_of_last_session_only():
    rows = [("u1", "a", "view", t * 7200) for t in range(4)] + [("u2", "a", "view", t) for t in range(4)]
    seq = build_primary(events(rows), LEVELS, NO_FILTER, 30).sequences
    assert seq["n_sessions"].to_list() == [4, 1]
    assert seq["last_session_test"].to_list() == [3, -1]
    assert seq["last_event_test"].to_list() == [3, 3]


def test_k_core_iterates_to_a_fixed_point():
    # dropping item z (1 event) leaves user 2 with 1 event, which then must go too
    users = np.array([1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 0, 2, 0, 1])  # x=0, y=1, z=2
    keep, iterations = k_core(users, items, min_user=2, min_item=2)
    assert keep.tolist() == [True, True, False, False, True, True]
    assert iterations == 3
    # the result is a fixed point: applying the filter again changes nothing
    again, _ = k_core(users[keep], items[keep], 2, 2)
    assert again.all()


def test_empty_after_filter_is_a_clear_error():
    with pytest.raises(InputError, match="no events left after the k-core filter.*Lower the thresholds"):
        build_primary(events([("u", "a", "view", 0)]), LEVELS, FilterSpec(), 30)


log_rows = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 8), st.sampled_from(list(LEVELS)), st.integers(0, 20_000)),
    min_size=1, max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(log_rows)
def test_splits_never_leak_future_events_into_training(rows):
    primary = build_primary(events(rows), LEVELS, NO_FILTER, session_gap_minutes=30)
    for seq in primary.sequences.iter_rows(named=True):
        ts, sess = np.array(seq["timestamp"]), np.array(seq["session"])
        assert (np.diff(ts) >= 0).all() and (np.diff(sess) >= 0).all()
        for protocol in ("last_event", "last_session"):
            valid, test = seq[f"{protocol}_valid"], seq[f"{protocol}_test"]
            if test < 0:
                continue
            assert 0 < valid < test < seq["n_events"]
            train = slice(0, valid)
            # nothing at or after the split point is in training: later in time, never in the same session
            assert ts[train].max() <= ts[valid:].min()
            if protocol == "last_session":
                assert sess[test] == sess.max() and (sess[test:] == sess.max()).all()
                assert sess[valid] == sess.max() - 1 and (sess[valid:test] == sess.max() - 1).all()
                assert not set(sess[train]) & set(sess[valid:])
                assert seq["n_sessions"] >= 3
