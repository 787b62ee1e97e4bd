"""The split rules (splits.py), once, on a hand-made log: protocol users, training prefixes, history windows,
evaluation sets and the repeat rule, for both protocols."""

import numpy as np
import polars as pl
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.splits import (
    BehaviorTable,
    eval_set,
    events_before,
    protocol_users,
    training_lengths,
    training_prefix,
    validation_prefix,
)


def sequences() -> pl.DataFrame:
    """user 0: 8 events in sessions 0 0 | 1 1 1 | 2 | 3 3 -> last_session valid 5 (session 2), test 6 (session 3);
               last_event valid 6, test 7.
    user 1: 3 events in one session -> last_event only (valid 1, test 2).
    user 2: 2 events -> in no protocol.
    user 3: 3 sessions of one event each -> both protocols, valid 1, test 2."""
    rows = [
        (0, [10, 11, 12, 10, 14, 11, 16, 10], [0, 1, 0, 2, 0, 1, 0, 2], [0, 0, 1, 1, 1, 2, 3, 3], 5, 6, 6, 7),
        (1, [20, 21, 22], [0, 0, 2], [0, 0, 0], -1, -1, 1, 2),
        (2, [30, 31], [0, 0], [0, 0], -1, -1, -1, -1),
        (3, [40, 41, 40], [0, 0, 2], [0, 1, 2], 1, 2, 1, 2),
    ]
    return pl.DataFrame(
        {"user_idx": [r[0] for r in rows], "item": [r[1] for r in rows], "behavior": [r[2] for r in rows],
         "session": [r[3] for r in rows], "n_events": [len(r[1]) for r in rows],
         "last_session_valid": [r[4] for r in rows], "last_session_test": [r[5] for r in rows],
         "last_event_valid": [r[6] for r in rows], "last_event_test": [r[7] for r in rows]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    )


def per_sequence(buffer, values):
    return [values[a:b].tolist() for a, b in zip(buffer.offsets[:-1], buffer.offsets[1:])]


def test_protocol_users_and_unknown_protocols():
    seq = sequences()
    assert protocol_users(seq, "last_session")["user_idx"].to_list() == [0, 3]
    assert protocol_users(seq, "last_event")["user_idx"].to_list() == [0, 1, 3]
    with pytest.raises(InputError, match="unknown split.protocol 'random'"):
        protocol_users(seq, "random")


def test_training_prefixes_with_and_without_users_outside_the_protocol():
    seq = sequences()
    protocol = training_prefix(seq, "last_session")
    assert protocol.user.tolist() == [0, 3]
    assert per_sequence(protocol, protocol.item) == [[10, 11, 12, 10, 14], [40]]
    everyone = training_prefix(seq, "last_session", users="all")
    # users outside the protocol have no targets: all their events are training data
    assert per_sequence(everyone, everyone.item) == [[10, 11, 12, 10, 14], [20, 21, 22], [30, 31], [40]]
    leave_one_out = training_prefix(seq, "last_event")
    assert per_sequence(leave_one_out, leave_one_out.item) == [[10, 11, 12, 10, 14, 11], [20], [40]]
    # item embeddings train on what is training data under every protocol
    assert training_lengths(seq, ["last_event", "last_session"]).tolist() == [5, 1, 2, 1]
    buffer, valid = validation_prefix(seq, "last_session")
    assert per_sequence(buffer, buffer.item) == [[10, 11, 12, 10, 14, 11], [40, 41]] and valid.tolist() == [5, 1]


def test_the_events_before_each_split():
    seq = sequences()
    # valid: the training prefix; test: also the validation session; None: everything (users outside the
    # protocol always give all their events)
    before_valid = events_before(seq, "last_session", "valid")
    assert per_sequence(before_valid, before_valid.item) == [
        [10, 11, 12, 10, 14], [20, 21, 22], [30, 31], [40]]
    before_test = events_before(seq, "last_session", "test")
    assert per_sequence(before_test, before_test.item) == [[10, 11, 12, 10, 14, 11], [20, 21, 22], [30, 31], [40, 41]]
    everything = events_before(seq, "last_event", None)
    assert per_sequence(everything, everything.item) == seq["item"].to_list()
    with pytest.raises(ValueError, match="split must be"):
        events_before(seq, "last_session", "train")


def test_history_windows_stop_at_the_event_or_at_its_session_start():
    events = training_prefix(sequences(), "last_session")  # user 0: sessions 0 0 1 1 1; user 3: session 0
    start, stop = events.history_windows("last_session", max_history=50)
    # the first session's events have an empty history; session 1 sees session 0 only
    assert [events.item[a:b].tolist() for a, b in zip(start, stop)] == [[], [], [10, 11], [10, 11], [10, 11], []]
    start, stop = events.history_windows("last_event", max_history=2)  # truncation keeps the newest events
    assert [events.item[a:b].tolist() for a, b in zip(start, stop)] == [[], [10], [10, 11], [11, 12], [12, 10], []]


def test_evaluation_sets_targets_histories_and_repeats():
    seq = sequences()
    test = eval_set(seq, "last_session", "test", max_history=3)
    assert test.user_idx.tolist() == [0, 3]  # users outside the protocol are not evaluated
    # one sample per (user, behavior present in the window); history = the window's start minus max_history
    assert [h[:, 0].tolist() for h in test.histories] == [[10, 14, 11], [40, 41]]
    assert [h.tolist() for h in test.history_sessions] == [[1, 1, 2], [0, 1]]  # what the session models read
    assert test.sample_user.tolist() == [0, 0, 1] and test.sample_behavior.tolist() == [0, 2, 2]
    assert test.targets == [[16], [10], [40]]
    # repeat = the item occurs anywhere before the window, not only in the truncated history
    assert test.repeat == [[False], [True], [True]]
    valid = eval_set(seq, "last_session", "valid", max_history=50, behaviors=[1])
    assert valid.targets == [[11]] and valid.repeat == [[True]] and valid.history_lengths.tolist() == [5, 1]
    loo = eval_set(seq, "last_event", "test", max_history=50)
    assert loo.user_idx.tolist() == [0, 1, 3] and loo.targets == [[10], [22], [40]]
    assert loo.repeat == [[True], [False], [True]]
    with pytest.raises(InputError, match="unknown split"):
        eval_set(seq, "last_event", "train", 50)


def test_the_validation_session_of_at_most_max_users_users():
    rng = np.random.default_rng(0)
    n = 300
    items = rng.integers(0, 50, (n, 3)).tolist()
    seq = pl.DataFrame(
        {"user_idx": rng.permutation(n), "item": items, "behavior": [[0, 1, 0]] * n, "session": [[0, 1, 2]] * n,
         "n_events": [3] * n, "last_session_valid": [1] * n, "last_session_test": [2] * n,
         "last_event_valid": [1] * n, "last_event_test": [2] * n},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    )
    full = eval_set(seq, "last_session", "valid", 50)
    small = eval_set(seq, "last_session", "valid", 50, max_users=40)
    assert len(small.user_idx) == 40 and set(small.user_idx) < set(full.user_idx)
    assert set(small.user_idx) != set(range(40))  # a hash sample, not the lowest ids
    # each kept user's samples are the full set's
    row = {u: i for i, u in enumerate(full.user_idx.tolist())}
    kept = [row[u] for u in small.user_idx[small.sample_user].tolist()]
    assert small.targets == [full.targets[i] for i in kept]
    assert [h.tolist() for h in small.histories] == [full.histories[row[u]].tolist() for u in small.user_idx.tolist()]
    # the same users whatever the table's row order; a larger cap keeps them; a cap above the users keeps all
    shuffled = eval_set(seq.sample(fraction=1.0, shuffle=True, seed=1), "last_session", "valid", 50, max_users=40)
    assert set(shuffled.user_idx) == set(small.user_idx)
    assert set(small.user_idx) < set(eval_set(seq, "last_session", "valid", 50, max_users=120).user_idx)
    assert eval_set(seq, "last_session", "valid", 50, max_users=n).targets == full.targets
    assert len(eval_set(seq, "last_event", "valid", 50, max_users=7).user_idx) == 7
    with pytest.raises(ValueError, match="validation session only"):
        eval_set(seq, "last_session", "test", 50, max_users=40)  # the test session is every user's


def test_distinct_targets_keep_their_first_occurrence_order():
    seq = pl.DataFrame(
        {"user_idx": [0], "item": [[1, 2, 3, 3, 2, 4]], "behavior": [[0, 0, 0, 0, 0, 0]], "session": [[0, 1, 2, 2, 2, 2]],
         "n_events": [6], "last_session_valid": [1], "last_session_test": [2], "last_event_valid": [4],
         "last_event_test": [5]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    )
    data = eval_set(seq, "last_session", "test", 50)
    assert data.targets == [[3, 2, 4]] and data.repeat == [[False, True, False]]


def test_behavior_table():
    table = BehaviorTable.from_table(pl.DataFrame({
        "behavior_idx": pl.Series([1, 0, 2], dtype=pl.Int8), "behavior": ["pv", "cart", "buy"],
        "level": pl.Series([0, 1, 2], dtype=pl.Int8), "is_target": [False, False, True]}))
    assert table.names == ("cart", "pv", "buy") and table.levels.tolist() == [1, 0, 2] and table.target == 2
    np.testing.assert_array_equal(table.is_target, [False, False, True])


def test_repeat_events_follow_the_evaluation_repeat_rule():
    everyone = training_prefix(sequences(), "last_session", users="all")
    # user 0 (sessions 0 0 | 1 1 1): item 10 again in session 1 is a repeat; under last_event too
    # user 1 (20 21 22) and user 2 (30 31): no item twice; user 3 (40): one event
    assert per_sequence(everyone, everyone.repeats("last_session")) == [
        [False, False, False, True, False], [False] * 3, [False] * 2, [False]]
    same_session = training_prefix(pl.DataFrame(
        {"user_idx": [0], "item": [[1, 1, 2, 1]], "behavior": [[0, 0, 0, 0]], "session": [[0, 0, 1, 1]],
         "n_events": [4], "last_session_valid": [-1], "last_session_test": [-1], "last_event_valid": [-1],
         "last_event_test": [-1]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    ), "last_session", users="all")
    # a second click inside the same session is not a repeat of the session's history; a later session's is
    assert same_session.repeats("last_session").tolist() == [False, False, False, True]
    assert same_session.repeats("last_event").tolist() == [False, True, False, True]
