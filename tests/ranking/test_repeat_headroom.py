"""The headroom benchmark's helpers: the product of two explorers over the union of their lists, the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from seqrec_pipeline.ranking.core import Ranking
from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def headroom():
    return load_benchmark("repeat_headroom")


def test_product_of_experts_ranks_the_union_once_per_item(headroom):
    decoder = Ranking(np.array([[3, 1, -1]]), np.array([[-1.0, -2.0, -np.inf]]))
    decoder_logp = np.log(np.array([0.1, 0.2, 0.05, 0.6, 0.05]))  # the decoder's exact scores of items 0..4
    base_logp = np.log(np.array([[0.4, 0.1, 0.3, 0.1, 0.1]]))
    ranked = headroom.product_of_experts(None, decoder, lambda union: decoder_logp[union], base_logp, a=0.5, width=3)
    # union {3, 1, 0, 2}; 0.5 * (log p_dec + log p_base): 3 -> 0.06, 0 -> 0.04, 2 -> 0.015, 1 -> 0.02
    assert ranked.items[0][ranked.items[0] >= 0].tolist() == [3, 0, 1, 2]
    np.testing.assert_allclose(np.exp(2 * ranked.scores[0, :4]), [0.06, 0.04, 0.02, 0.015], rtol=1e-6)


def test_oracle_moves_the_first_explore_target_to_the_requested_rank(headroom):
    class Data:  # the two fields the oracle reads
        targets = [[7, 9], [5]]
        repeat = [[True, False], [True]]

    base = Ranking(np.array([[1, 9, 2, 3], [4, 6, 8, 0]]), np.array([[-1.0, -2.0, -3.0, -4.0]] * 2))
    moved = headroom.oracle(Data, base, rank=2)
    assert moved.items[0].tolist() == [1, 2, 9, 3]  # 9 (explore) moved from rank 2 to rank 3, nothing lost
    assert moved.scores[0, 2] > moved.scores[0, 3] and (np.diff(moved.scores[0]) < 0).all()
    assert moved.items[1].tolist() == [4, 6, 8, 0]  # no explore target: unchanged


def test_the_learned_gates_query_features_by_hand(headroom):
    from seqrec_pipeline.ranking import repeat as R
    from seqrec_pipeline.splits import eval_set
    from tests.ranking.test_repeat import DAY, sequences

    data = eval_set(sequences(), "last_session", "test", max_history=50)  # past: 1 2 3 | 2 4(buy) | 2(buy)
    inputs = R.RepeatInputs(data, 2)
    scorer = R.RepeatScorer.uniform(2)
    feats = inputs.features(1.0, 1.0)
    p_rep, total = R.history_distribution(data, inputs, feats, scorer, None, None)
    base = Ranking(np.array([[9, 2, 7, 8]]), np.array([[-1.0, -2.0, -3.0, -4.0]]))
    x = headroom.gate_features(data, feats, p_rep, total, R.explore_candidates(data, base), 2)
    top_explore = -1.0 - np.log(np.exp([-1.0, -3.0, -4.0]).sum())  # item 2 is history, not an explore candidate
    expected = [np.log(6), np.log1p(4), np.log1p((data.window_time[0] - 3 * DAY) / 3600), np.log1p(1),
                np.log(3 / 6), top_explore, 1.0]  # the last past event is a buy, alone in its session
    np.testing.assert_allclose(x, [expected], rtol=1e-9)
