"""The rule baselines (smb_rule) on hand-checked logs: recent repeat, popularity, item transitions, item
neighbors."""

import numpy as np
import polars as pl

from seqrec_pipeline.params import load_parameters
from seqrec_pipeline.ranking import rank_rule
from seqrec_pipeline.ranking.rules import ItemKnn, item_knn_ranking
from seqrec_pipeline.splits import eval_set, training_prefix


def _sequences() -> pl.DataFrame:
    # last_event: user 0 trains on items 1 2 1 3 (valid = 4), tests on position 5;
    # user 1 trains on 1 2 4 (valid = 3), tests on position 4; behaviors all 0
    rows = [(0, [1, 2, 1, 3, 2, 4]), (1, [1, 2, 4, 3, 1])]
    return pl.DataFrame(
        {"user_idx": [u for u, _ in rows], "item": [i for _, i in rows],
         "behavior": [[0] * len(i) for _, i in rows], "session": [list(range(len(i))) for _, i in rows],
         "n_events": [len(i) for _, i in rows],
         "last_event_valid": [4, 3], "last_event_test": [5, 4],
         "last_session_valid": [-1, -1], "last_session_test": [-1, -1]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    )


def test_rules_on_a_hand_checked_log():
    seq = _sequences()
    data = eval_set(seq, "last_event", "test", max_history=10)
    assert [h[:, 0].tolist() for h in data.histories] == [[1, 2, 1, 3, 2], [1, 2, 4, 3]]
    # recent: distinct history items, newest first
    assert rank_rule("recent", seq, data, 6, "last_event", 3).items.tolist() == [[2, 3, 1], [3, 4, 2]]
    # training events: 1 2 1 3 | 1 2 4 -> counts 1:3, 2:2, 3:1, 4:1 (ties by the same overall count)
    assert rank_rule("popularity", seq, data, 6, "last_event", 2).items.tolist() == [[1, 2], [1, 2]]
    # transitions in training: 1->2 (twice), 2->1, 1->3, 2->4; from the last history item (2 and 3)
    top = rank_rule("transitions", seq, data, 6, "last_event", 2).items.tolist()
    assert top[0] == [1, 4]  # 2->1 and 2->4 once each; the tie goes to the more popular item 1
    assert top[1][0] == 1  # 3 has no training successor: popularity order (1 first)



def _random_log(n_users: int = 80, n_items: int = 40, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(4, 12))
        items = rng.zipf(1.6, n) % n_items  # a skewed catalog: popular items, many ties among the rare ones
        rows.append({"user_idx": u, "item": items.tolist(), "behavior": rng.integers(0, 2, n).tolist(),
                     "session": list(range(n)), "n_events": n, "last_event_valid": n - 2, "last_event_test": n - 1,
                     "last_session_valid": -1, "last_session_test": -1})
    return pl.DataFrame(rows, schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
                                                "session": pl.List(pl.Int32)})


def test_sparse_transitions_and_popularity_equal_their_dense_definition():
    seq, n_items, k = _random_log(), 40, 10
    data = eval_set(seq, "last_event", "test", max_history=10)
    train = training_prefix(seq, "last_event", users="all")
    overall = np.bincount(train.item, minlength=n_items).astype(np.float64)
    by_behavior = np.zeros((2, n_items))
    np.add.at(by_behavior, (train.behavior.astype(np.int64), train.item.astype(np.int64)), 1.0)
    same_user = np.repeat(np.arange(train.n_sequences), train.lengths)
    follows = np.flatnonzero(same_user[1:] == same_user[:-1])
    counts = np.zeros((n_items, n_items))
    np.add.at(counts, (train.item[follows].astype(np.int64), train.item[follows + 1].astype(np.int64)), 1.0)
    last = np.array([h[-1, 0] for h in data.histories])[data.sample_user]
    dense = {"transitions": counts[last] + overall * 1e-9,
             "popularity": (by_behavior + overall * 1e-9)[data.sample_behavior]}
    for rule, scores in dense.items():
        items = rank_rule(rule, seq, data, n_items, "last_event", k).items
        # the same scores in the same order (items of exactly equal score may swap places)
        got = np.where(items >= 0, np.take_along_axis(scores, np.maximum(items, 0), 1), 0.0)
        expected = -np.sort(-np.where(scores > 0, scores, 0.0), axis=1)[:, :k]
        np.testing.assert_array_equal(got, expected)
        assert ((items >= 0) == (expected > 0)).all() and (items >= 0).any()

def _knn_log(test_item: int = 1) -> pl.DataFrame:
    # last_event: users 0-2 train on 1 2 x (x = 5, 6, 7), validate and test on 9; user 3 trains on 3 1 8,
    # validates on 4 and tests on ``test_item``
    rows = [[1, 2, 5, 9, 9], [1, 2, 6, 9, 9], [1, 2, 7, 9, 9], [3, 1, 8, 4, test_item]]
    return pl.DataFrame(
        {"user_idx": list(range(4)), "item": rows, "behavior": [[0] * 5] * 4, "session": [list(range(5))] * 4,
         "timestamp": [[100 * i for i in range(5)]] * 4, "n_events": [5] * 4,
         "last_event_valid": [3] * 4, "last_event_test": [4] * 4,
         "last_session_valid": [-1] * 4, "last_session_test": [-1] * 4},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32),
                          "timestamp": pl.List(pl.Int64)},
    )


def test_item_neighbors_are_the_items_that_co_occur_with_the_last_ones(tmp_path):
    seq = _knn_log()
    test = eval_set(seq, "last_event", "test", max_history=10)
    train = training_prefix(seq, "last_event", users="all")
    knn = ItemKnn.fit(train, 10, window=3, chunk_events=100, width=4, last=3, decay=0.7)
    ranked = knn.rank(test)
    # user 3's last items 4 (no training event), 8 and 1: item 1 co-occurs with 2 in three users (first), with
    # 5, 6 and 7 two events apart; 3, 1 and 8 are its past and never explore candidates
    assert ranked.items[3, 0] == 2 and set(ranked.items[3, 1:].tolist()) == {5, 6, 7}
    assert (np.diff(ranked.scores[3]) <= 0).all() and np.isfinite(ranked.scores[3]).all()
    # user 0 (past 1 2 5 9): 2 co-occurs with 6 and 7; then the fallback, the width = 4 most popular training
    # items (1, 2, then 3 and 5 of the ties), gives 3; nothing else
    assert ranked.items[0].tolist()[:2] in ([6, 7], [7, 6]) and ranked.items[0].tolist()[2:] == [3, -1]
    assert 0 < ranked.scores[0, 2] < 1e-6 < ranked.scores[0, 1]
    assert not test.in_past(ranked.items).any()
    # the same lists whatever the blocks: one sample each, by a budget of co-occurrence entries (1: one sample
    # each again; 12: blocks of a few samples), one block
    for blocks in ({"block": 1}, {"entries": 1}, {"entries": 12}, {"entries": 10**9}):
        again = knn.rank(test, **blocks)
        assert again.items.tolist() == ranked.items.tolist()
        np.testing.assert_array_equal(again.scores, ranked.scores)
    # each item's neighbors: its highest PPMI entries only (item 1's row, then the scores of user 3's list)
    row = knn.ppmi[1].toarray().ravel()
    cut = ItemKnn.fit(train, 10, window=3, chunk_events=100, width=4, last=3, decay=0.7, neighbors=2)
    assert cut.ppmi.getnnz(axis=1).max() == 2 and cut.ppmi.getnnz(axis=1).tolist() == np.minimum(
        knn.ppmi.getnnz(axis=1), 2).tolist()
    kept = cut.ppmi[1].toarray().ravel()
    assert np.count_nonzero(kept) == 2 and kept[kept > 0].min() >= row[(row > 0) & (kept == 0)].max()
    # stored as plain files and read back, it ranks the same
    knn.save(tmp_path)
    assert ItemKnn.is_stored_in(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["config.json",
                                                                                              "ppmi.parquet"]
    again = ItemKnn.load(tmp_path).rank(test)
    assert again.items.tolist() == ranked.items.tolist()
    np.testing.assert_array_equal(again.scores, ranked.scores)
    cut.save(tmp_path)
    assert ItemKnn.load(tmp_path).settings == cut.settings


def test_item_knn_is_fitted_on_the_validation_session_only():
    grid = load_parameters().repeat
    runs = []
    for test_item in (1, 2):
        seq = _knn_log(test_item)
        valid, test = (eval_set(seq, "last_event", s, max_history=10) for s in ("valid", "test"))
        runs.append(item_knn_ranking(seq, valid, test, 10, 1, "last_event", grid, window=3, chunk_events=100, k=5))
    (first, head, knn), (second, other, _) = runs
    assert knn.settings == {"window": 3, "width": grid.candidates, "last": grid.cooccurrence_items,
                            "decay": grid.cooccurrence_decay, "neighbors": grid.knn_neighbors}
    assert head.to_dict() == other.to_dict()  # the test targets never reach the fit
    assert first.items.tolist() == second.items.tolist() and first.items.shape == (4, 5)
    assert 2 in first.items[3].tolist()  # the co-occurring new item is in user 3's list
