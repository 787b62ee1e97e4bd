"""Ranking metrics against hand computations (definitions: docs/design.md#metrics)."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.ranking.metrics import (
    behavior_accuracy,
    behavior_item_ids,
    metrics_by_behavior,
    pad_targets,
    per_sample_metrics,
    ranking_metrics,
)


def approx(x):
    return pytest.approx(x, abs=1e-9)


def test_two_targets_found_at_ranks_2_and_5():
    # hits at ranks 2 and 5; |T| = 2
    m = ranking_metrics(np.array([[5, 3, 9, 1, 7]]), [[3, 7]])
    assert m["hit@1"] == 0 and m["recall@1"] == 0 and m["ndcg@1"] == 0 and m["mrr@1"] == 0
    assert m["hit@5"] == 1 and m["recall@5"] == 1.0
    # DCG = 1/log2(3) + 1/log2(6) = 1.017782; IDCG of 2 hits = 1 + 1/log2(3) = 1.630930
    assert m["ndcg@5"] == approx(0.6240505200038379)
    assert m["mrr@5"] == 0.5
    assert m["ndcg@10"] == m["ndcg@5"] and m["recall@10"] == 1.0


def test_more_targets_than_k():
    # |T| = 6 > 5: recall divides by |T|, the ideal DCG of @5 has 5 hits, that of @10 has 6
    predictions = np.array([[1, 9, 2, 3, 8, 4, 5, 6, 0, 7]])
    m = ranking_metrics(predictions, [[1, 2, 3, 4, 5, 6]])
    assert m["hit@1"] == 1 and m["recall@1"] == approx(1 / 6) and m["ndcg@1"] == 1 and m["mrr@1"] == 1
    assert m["recall@5"] == approx(3 / 6)  # hits at ranks 1, 3, 4
    assert m["ndcg@5"] == approx((1 + 1 / log2(4) + 1 / log2(5)) / sum(1 / log2(r + 1) for r in range(1, 6)))
    assert m["ndcg@5"] == approx(0.6548086577531307)
    assert m["recall@10"] == 1.0  # + ranks 6, 7, 8
    assert m["ndcg@10"] == approx(0.8883444449388402)


def test_short_lists_misses_and_empty_slots():
    predictions = np.array([[4, 2, 8], [1, 2, -1], [-1, -1, -1]])
    per = per_sample_metrics(predictions, [[8], [9], [-1, 5]], ks=(1, 5, 10))
    # sample 0: one target at rank 3 of a 3-item list
    assert per["hit@1"][0] == 0 and per["hit@5"][0] == 1 and per["recall@10"][0] == 1
    assert per["ndcg@5"][0] == approx(0.5) and per["mrr@5"][0] == approx(1 / 3) and per["mrr@10"][0] == approx(1 / 3)
    # samples 1-2: nothing found (an empty slot -1 never matches, not even padding)
    for name, values in per.items():
        assert values[1] == 0 and values[2] == 0, name
    means = ranking_metrics(predictions, [[8], [9], [5]])
    assert means["hit@5"] == approx(1 / 3) and means["ndcg@5"] == approx(0.5 / 3)


def test_repeated_predictions_and_targets_count_once():
    # a list repeating the target: counting stops after |T| = 1 hit (recall and NDCG stay <= 1)
    m = ranking_metrics(np.array([[3, 3, 5]]), [[3, 3]])  # repeated target: still a set of one
    assert m["recall@5"] == 1.0 and m["ndcg@5"] == 1.0 and m["hit@5"] == 1.0 and m["mrr@5"] == 1.0
    assert pad_targets([[3, 3, 1], [2]]).tolist() == [[1, 3, -1], [2, -1, -1]]


def test_per_behavior_and_sample_weighted_merge():
    predictions = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    targets = [[1], [4], [9], [8]]  # hits: rank 1, rank 2, none, rank 2
    behavior = np.array([0, 0, 0, 1])
    result = metrics_by_behavior(predictions, targets, behavior, ks=(1, 2), behavior_names=["click", "buy"])
    click, buy = result["by_behavior"]["click"], result["by_behavior"]["buy"]
    assert click["hit@1"] == approx(1 / 3) and click["hit@2"] == approx(2 / 3)
    assert click["mrr@2"] == approx((1 + 0.5) / 3) and click["ndcg@2"] == approx((1 + 1 / log2(3)) / 3)
    assert buy["hit@1"] == 0 and buy["mrr@2"] == 0.5 and buy["ndcg@2"] == approx(1 / log2(3))
    # merged = (3 * click + 1 * buy) / 4, not the plain mean of the two behaviors
    assert result["merged"]["mrr@2"] == approx((3 * click["mrr@2"] + buy["mrr@2"]) / 4) == approx(0.5)
    assert result["merged"]["hit@2"] == approx(0.75)
    assert result["n_samples"] == {"merged": 4, "click": 3, "buy": 1}


def test_next_behavior_accuracy():
    assert behavior_accuracy(np.array([0, 2, 1, -1]), np.array([0, 1, 1, 3])) == 0.5
    acceptable = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)  # behaviors in each target session
    assert behavior_accuracy(np.array([2, 1, -1]), acceptable) == approx(2 / 3)


def test_behavior_item_ids():
    ids = behavior_item_ids(np.array([[4, -1]]), np.array([[2, -1]]), n_items=10)
    assert ids.tolist() == [[24, -1]]


def test_bad_input_is_rejected():
    with pytest.raises(InputError, match="no target"):
        ranking_metrics(np.array([[1, 2]]), [[-1]])
    with pytest.raises(InputError, match="target sets"):
        ranking_metrics(np.array([[1, 2]]), [[1], [2]])
    with pytest.raises(InputError, match="cutoffs"):
        ranking_metrics(np.array([[1, 2]]), [[1]], ks=(0,))


def test_repeat_and_explore_parts_by_hand():
    from seqrec_pipeline.ranking.metrics import history_share, metrics_by_part

    # sample 0 (behavior 0): targets 5 (repeat) and 7 (explore); list 5 7 -> both parts hit at their rank
    # sample 1 (behavior 1): target 9 (explore) only, list 8 9; sample 2 (behavior 1): target 4 (repeat), missed
    predictions = np.array([[5, 7], [8, 9], [1, 2]])
    parts = metrics_by_part(predictions, [[5, 7], [9], [4]], [[True, False], [False], [True]],
                            np.array([0, 1, 1]), ks=(2,), behavior_names=["view", "buy"])
    assert parts["repeat"]["n_samples"] == {"merged": 2, "view": 1, "buy": 1}
    assert parts["repeat"]["by_behavior"]["view"]["ndcg@2"] == 1.0  # repeat target at rank 1
    assert parts["repeat"]["merged"]["hit@2"] == 0.5
    assert parts["explore"]["n_samples"] == {"merged": 2, "view": 1, "buy": 1}
    # explore target 7 at rank 2 of sample 0: 1/log2(3); target 9 at rank 2 of sample 1: the same
    assert abs(parts["explore"]["merged"]["ndcg@2"] - 1 / np.log2(3)) < 1e-12
    none = metrics_by_part(predictions[:1], [[5]], [[True]], np.array([0]), ks=(2,))
    assert none["explore"] == {"merged": None, "by_behavior": {}, "n_samples": {"merged": 0}}
    share = history_share(np.array([[True, False, False], [True, True, False]]), np.array([[1, 2, -1], [3, 4, 5]]), 3)
    assert share.tolist() == [0.5, 2 / 3]  # empty slots do not count


def test_selection_on_explore_targets_ignores_history_items():
    from seqrec_pipeline.ranking import Ranking
    from seqrec_pipeline.ranking.core import explore_list, selection_scores
    from seqrec_pipeline.splits import eval_set
    from tests.test_splits import sequences

    data = eval_set(sequences(), "last_session", "test", 50)  # user 0: past items 10 11 12 14; targets 16 | 10
    ranking = Ranking(np.array([[10, 16, 11, 30], [14, 99, 10, 31], [40, 41, 42, 43]]))
    assert explore_list(data, ranking, 2).tolist() == [[16, 30], [99, 31], [42, 43]]  # user 3's past: 40 41
    # explore targets: 16 (sample 0); sample 1's only target (10) repeats, sample 2's (40) too: left out
    assert selection_scores(data, ranking, 2, explore=True) == {"ndcg@2": 1.0, "hit@2": 1.0}
    plain = selection_scores(data, ranking, 2, explore=False)
    assert plain["hit@2"] == 2 / 3 and abs(plain["ndcg@2"] - (1 / np.log2(3) + 1) / 3) < 1e-12
