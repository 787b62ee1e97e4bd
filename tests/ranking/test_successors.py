"""The explore side's experts (ranking/successors.py).  The recent items' successors: the table by hand, the
candidates outside the history (of the last item and of a window of recent items), the product of experts at its
extremes, and the weight and the window chosen on the validation session.  The co-occurring items: the table, the
candidates' summed PPMI by hand, the weight chosen on the validation session, the head's JSON."""

from dataclasses import asdict, replace

import numpy as np
import polars as pl
import pytest

from seqrec_pipeline.params import RepeatParams, load_parameters
from seqrec_pipeline.ranking import Ranking
from seqrec_pipeline.ranking import repeat
from seqrec_pipeline.ranking.repeat import (Mixture, RepeatInputs, RepeatScorer, explore_side, fit_cooccurrence,
                                            fit_repeat_explore, fit_successors, mixture_ranking)
from seqrec_pipeline.ranking.successors import (MISSING_MARGIN, CooccurrencePooling, Neighbors, Successors,
                                                cooccurrence_candidates, cooccurrence_table, product_of_experts,
                                                successor_candidates, successor_table)
from seqrec_pipeline.splits import EventBuffer, eval_set, training_prefix

DAY = 86400


def _buffer(*sequences: list[int]) -> EventBuffer:
    items = np.concatenate([np.asarray(s, np.int32) for s in sequences])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    return EventBuffer(items, np.zeros(len(items), np.int8), np.zeros(len(items), np.int32), offsets,
                       np.arange(len(sequences), dtype=np.int32))


def test_the_successor_table_by_hand():
    # transitions: user 0: 1>2 2>3 3>1 1>2, user 1: 1>2 2>1 1>3 (none across users)
    train = _buffer([1, 2, 3, 1, 2], [1, 2, 1, 3])
    full = successor_table(train, width=5)
    rows = list(zip(full.source.tolist(), full.item.tolist(), np.exp(full.log_prob).round(6).tolist()))
    assert rows == [(1, 2, 0.75), (1, 3, 0.25), (2, 1, 0.5), (2, 3, 0.5), (3, 1, 1.0)]
    # one successor each: the most frequent, ties by item index; probabilities stay shares of all transitions
    top = successor_table(train, width=1)
    rows = list(zip(top.source.tolist(), top.item.tolist(), np.exp(top.log_prob).round(6).tolist()))
    assert rows == [(1, 2, 0.75), (2, 1, 0.5), (3, 1, 1.0)]
    again = Successors.from_frame(full.to_frame().sample(fraction=1.0, shuffle=True, seed=1))
    assert again.source.tolist() == full.source.tolist() and again.item.tolist() == full.item.tolist()


def _log(rows: list[tuple[list[int], int, int]]) -> pl.DataFrame:
    """One user per row: (items, validation position, test position); one event per session, a day apart."""
    return pl.DataFrame(
        [{"user_idx": u, "item": items, "behavior": [0] * len(items), "timestamp": [DAY * i for i in range(len(items))],
          "session": list(range(len(items))), "n_events": len(items), "last_session_valid": v, "last_session_test": t,
          "last_event_valid": v, "last_event_test": t} for u, (items, v, t) in enumerate(rows)],
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32),
                          "timestamp": pl.List(pl.Int64), "user_idx": pl.Int32})


def test_candidates_are_the_last_items_successors_outside_the_past():
    log = _log([([5, 1, 9, 7, 8], 3, 4), ([2, 3, 4, 8, 6], 3, 4)])
    table = successor_table(_buffer([1, 2, 3, 4], [1, 5, 1, 6], [3, 9]), width=10)  # 1 > 2, 5, 6; 3 > 4, 9
    valid = eval_set(log, "last_session", "valid", max_history=50)
    sample, item, logp = successor_candidates(valid, table)
    # user 0's last item 9 has no successor; user 1's last item 4 neither
    assert len(sample) == 0
    table = successor_table(_buffer([9, 5, 9, 6, 9, 2], [4, 3, 4, 7]), width=10)  # 9 > 5, 6, 2; 4 > 3, 7
    sample, item, logp = successor_candidates(valid, table)
    got = sorted(zip(sample.tolist(), item.tolist(), np.exp(logp).round(6).tolist()))
    # user 0's past holds 5 (dropped), user 1's past holds 3 (dropped)
    assert got == [(0, 2, round(1 / 3, 6)), (0, 6, round(1 / 3, 6)), (1, 7, 0.5)]


def test_a_window_of_recent_items_adds_up_their_shares():
    log = _log([([5, 1, 9, 7, 8], 3, 4), ([2, 3, 4, 8, 6], 3, 4)])
    valid = eval_set(log, "last_session", "valid", max_history=50)
    # 9 > 5, 6, 2 (1/3 each); 4 > 3, 7 (1/2 each); 3 > 4; 1 > 6 (2/3), 2 (1/3)
    table = successor_table(_buffer([9, 5, 9, 6, 9, 2], [4, 3, 4, 7], [1, 2], [1, 6], [1, 6]), width=10)
    sample, item, logp = successor_candidates(valid, table, window=2, decay=0.5)
    got = sorted(zip(sample.tolist(), item.tolist(), np.exp(logp).round(6).tolist()))
    # user 0 (history 5 1 9): 9 weighs 2/3, 1 weighs 1/3; 6 follows both (2/9 + 2/9), 2 too (2/9 + 1/9), 5 is past
    # user 1 (history 2 3 4): 4's 7 at 2/3 * 1/2; 3's 4 and 4's 3 are past
    assert got == [(0, 2, round(3 / 9, 6)), (0, 6, round(4 / 9, 6)), (1, 7, round(1 / 3, 6))]
    # a window of one is the last item alone; at most the table's width per sample, the most likely kept
    one = successor_candidates(valid, table, window=1, decay=0.5)
    assert sorted(zip(*[a.tolist() for a in one[:2]])) == [(0, 2), (0, 6), (1, 7)]
    narrow = successor_table(_buffer([9, 5, 9, 6, 9, 2], [4, 3, 4, 7], [1, 2], [1, 6], [1, 6]), width=1)
    sample, item, _ = successor_candidates(valid, narrow, window=2, decay=0.5)
    assert sorted(zip(sample.tolist(), item.tolist())) == [(0, 2)]  # 9 > 2 and 1 > 6 tie at 2/9: lower index


def test_the_product_of_experts_at_its_extremes():
    model = (np.array([0, 0, 0, 1, 1]), np.array([10, 11, 12, 10, 11]), np.array([-1.0, -2.0, -3.0, -1.0, -2.0]))
    found = (np.array([0, 0]), np.array([12, 13]), np.log(np.array([0.9, 0.1])))
    # weight 0: the model's triplets unchanged, whatever the successors say
    unchanged = product_of_experts(model, found, np.zeros(2), 2)
    for a, b in zip(unchanged, model):
        assert np.array_equal(np.sort(a), np.sort(b))
    sample, item, score = product_of_experts(model, found, np.array([0.5, 0.5]), 2)
    by = {(s, i): v for s, i, v in zip(sample.tolist(), item.tolist(), score.tolist())}
    # sample 1 has no successors: the model's own scores; sample 0: the union of both experts' candidates
    assert {k: v for k, v in by.items() if k[0] == 1} == {(1, 10): -1.0, (1, 11): -2.0}
    assert {i for s, i in by if s == 0} == {10, 11, 12, 13}
    m = np.array([-1.0, -2.0, -3.0])
    m = m - np.log(np.exp(m).sum())
    t_floor = np.log(0.1) - MISSING_MARGIN
    assert by[(0, 12)] == pytest.approx(0.5 * m[2] + 0.5 * np.log(0.9))
    assert by[(0, 10)] == pytest.approx(0.5 * m[0] + 0.5 * t_floor)
    assert by[(0, 13)] == pytest.approx(0.5 * (m.min() - MISSING_MARGIN) + 0.5 * np.log(0.1))
    # the item both experts rank high wins: the model's third item is the successors' first
    assert max((v, i) for (s, i), v in by.items() if s == 0)[1] == 12


def _walks(n_users: int, next_of, seed: int) -> pl.DataFrame:
    """Users walking the catalog 1..59 by ``next_of`` from a random start: 6 events, validation at 4, test at 5;
    the walk never revisits an item, so every target is new to its user."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_users):
        walk = [int(rng.integers(1, 60))]
        for _ in range(5):
            walk.append(next_of(walk[-1]))
        rows.append((walk, 4, 5))
    return _log(rows)


def _next(i: int) -> int:
    return i % 59 + 1


def test_the_weight_is_chosen_on_the_validation_session():
    log = _walks(200, _next, seed=0)
    valid = eval_set(log, "last_session", "valid", max_history=50)
    table = successor_table(training_prefix(log, "last_session", users="all"), width=5)
    n = valid.n_samples
    targets = np.array([t[0] for t in valid.targets])
    # a model that knows nothing: the same three items (never a target) for everyone
    blind = Ranking(np.tile(np.array([[60, 61, 62]]), (n, 1)), np.tile(np.array([[-1.0, -1.1, -1.2]]), (n, 1)))
    # the walk's next item where the training walks took that step (its only successor, probability 1)
    last = np.array([valid.histories[u][-1][0] for u in valid.sample_user])
    covered = np.isin(last * 100 + targets, table.source * 100 + table.item)
    assert covered.mean() > 0.9
    pooling = fit_successors(valid, blind, table, [0.0, 0.4, 0.8], [1, 2, 3], 0.7, n_behaviors=1)
    weight, window = pooling.weight, pooling.window
    # at 0.4 the blind model's first item still wins (0.6 * -1.0 + 0.4 * -1 > 0.6 * -2.2 + 0.4 * 0), at 0.8 not;
    # older items only add successors that are already past (the walk): the last item alone
    assert weight == [0.8] and window == 1
    assert pooling.width == table.width  # no width given: the table's own, recorded to count it again
    mixture = Mixture(RepeatScorer.uniform(1), [-50.0], [0.0], [1.0], successors=pooling)
    ranked = mixture_ranking(valid, RepeatInputs(valid, 1), blind, mixture, k=3, successors=table)
    assert (ranked.items[covered, 0] == targets[covered]).all()
    assert set(ranked.items[~covered, 0].tolist()) <= {60}  # no successor: the model's own list
    # a model that is right, against successors that point elsewhere: the model alone
    knows = Ranking(np.stack([targets, np.full(n, 61), np.full(n, 62)], 1), np.tile(np.array([[-1.0, -2.0, -3.0]]),
                                                                                 (n, 1)))
    wrong = successor_table(training_prefix(_walks(60, lambda i: (i + 7) % 59 + 1, seed=1), "last_session",
                                            users="all"), width=5)
    assert fit_successors(valid, knows, wrong, [0.0, 0.4, 0.8], [1], 0.7, n_behaviors=1) is None


def test_the_window_is_chosen_on_the_validation_session():
    # the walk, then an item never seen before (no successors) just before the validation target: only the item
    # before it knows what comes next
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(200):
        walk = [int(rng.integers(1, 60))]
        for _ in range(3):
            walk.append(_next(walk[-1]))
        rows.append((walk + [int(rng.integers(100, 400)), _next(walk[-1]), _next(_next(walk[-1]))], 5, 6))
    log = _log(rows)
    valid = eval_set(log, "last_session", "valid", max_history=50)
    table = successor_table(training_prefix(log, "last_session", users="all"), width=5)
    n = valid.n_samples
    blind = Ranking(np.tile(np.array([[60, 61, 62]]), (n, 1)), np.tile(np.array([[-1.0, -1.1, -1.2]]), (n, 1)))
    pooling = fit_successors(valid, blind, table, [0.0, 0.4, 0.8], [1, 2, 3], 0.7, n_behaviors=1)
    weight, window = pooling.weight, pooling.window
    assert weight == [0.8] and window == 2  # 3 reads nothing more (its successors are past): the smaller wins
    mixture = Mixture(RepeatScorer.uniform(1), [-50.0], [0.0], [1.0], successors=pooling)
    ranked = mixture_ranking(valid, RepeatInputs(valid, 1), blind, mixture, k=3, successors=table)
    targets = np.array([t[0] for t in valid.targets])
    assert (ranked.items[:, 0] == targets).mean() > 0.9
    alone = Mixture(RepeatScorer.uniform(1), [-50.0], [0.0], [1.0], successors=replace(pooling, window=1))
    assert (mixture_ranking(valid, RepeatInputs(valid, 1), blind, alone, k=3, successors=table).items[:, 0]
            == targets).mean() < 0.1


def test_a_head_that_pools_successors_needs_their_table_and_keeps_them_through_json():
    log = _walks(30, _next, seed=2)
    valid = eval_set(log, "last_session", "valid", max_history=50)
    n = valid.n_samples
    blind = Ranking(np.tile(np.array([[60, 61, 62]]), (n, 1)), np.tile(np.array([[-1.0, -1.1, -1.2]]), (n, 1)))
    grid = load_parameters().repeat
    table = successor_table(training_prefix(log, "last_session", users="all"), grid.successors)
    head = fit_repeat_explore(valid, blind, 1, 70, grid, successors=table)
    assert head.uses_successors and head.successors.width == grid.successors
    last = np.array([valid.histories[u][-1][0] for u in valid.sample_user])
    targets = np.array([t[0] for t in valid.targets])
    covered = np.isin(last * 100 + targets, table.source * 100 + table.item)
    # the successor is the target wherever the training walks took that step; elsewhere nothing finds it
    assert head.validation["ndcg@10"] == pytest.approx(covered.mean()) and 0.5 < covered.mean() < 1
    again = Mixture.from_dict(head.to_dict())
    assert again.successors == head.successors
    # a head saved with the flat successor_* keys of earlier versions reads back the same
    flat = {k: v for k, v in head.to_dict().items() if k != "successors"}
    flat |= {f"successor_{key}": value for key, value in asdict(head.successors).items()}
    assert Mixture.from_dict(flat).successors == head.successors
    with pytest.raises(ValueError, match="successors"):
        mixture_ranking(valid, RepeatInputs(valid, 1), blind, again, k=10)
    # a grid of zeros fits the mixture without them (what heads without successors do)
    plain = fit_repeat_explore(valid, blind, 1, 70, grid.model_copy(update={"successor_weights": [0.0]}),
                               successors=table)
    assert not plain.uses_successors and plain.successors is None


def test_successor_weights_outside_0_to_1_and_empty_windows_are_refused():
    grid = load_parameters().repeat.model_dump()
    with pytest.raises(ValueError, match=r"out of range: \['successor_weights'\]"):
        RepeatParams(**(grid | {"successor_weights": [0.0, 1.0]}))
    with pytest.raises(ValueError, match=r"out of range: \['successor_windows'\]"):
        RepeatParams(**(grid | {"successor_windows": [0, 2]}))


# ----------------------------------------------------------------------------------------------------------
# The co-occurrence expert: the items of highest PPMI with the newest history items
# ----------------------------------------------------------------------------------------------------------


def test_the_cooccurrence_table_keeps_each_items_highest_ppmi():
    # 1 and 2 always come together, 3 follows 2 once and 4 sits at the far end of a long walk
    train = _buffer([1, 2, 3], [1, 2, 9, 8], [2, 1, 7], [5, 6, 4, 7])
    table = cooccurrence_table(train, width=2, window=1, chunk_events=100)
    assert table.window == 1 and table.width == 2
    rows = {}
    for source, item, ppmi in zip(table.source.tolist(), table.item.tolist(), table.ppmi.tolist()):
        rows.setdefault(source, []).append((item, ppmi))
    assert rows[1][0][0] == 2 and rows[2][0][0] == 1  # each other's best neighbor
    assert all(len(r) <= 2 and [p for _, p in r] == sorted((p for _, p in r), reverse=True) for r in rows.values())
    assert 4 not in [i for i, _ in rows[1]] and (table.ppmi > 0).all()
    again = Neighbors.from_frame(table.to_frame().sample(fraction=1.0, shuffle=True, seed=1))
    assert again.source.tolist() == table.source.tolist() and again.item.tolist() == table.item.tolist()


def test_cooccurrence_candidates_add_up_the_newest_items_ppmi_outside_the_past():
    log = _log([([5, 1, 9, 7, 8], 3, 4), ([2, 3, 4, 8, 6], 3, 4)])
    valid = eval_set(log, "last_session", "valid", max_history=50)
    # 9 ~ 6 (2.0), 2 (1.0), 5 (0.5); 1 ~ 3 (4.0), 6 (1.0); 4 ~ 3 (1.0)
    table = Neighbors(np.array([1, 1, 4, 9, 9, 9]), np.array([3, 6, 3, 6, 2, 5]), np.array([4.0, 1.0, 1.0, 2.0, 1.0,
                                                                                         0.5]))
    sample, item, logp = cooccurrence_candidates(valid, table, CooccurrencePooling([0.5], scale=1.0, items=2,
                                                                                   decay=0.5))
    got = {(s, i): v for s, i, v in zip(sample.tolist(), item.tolist(), logp.tolist())}
    # user 0 (history 5 1 9): 6 = 2.0 + 0.5 * 1.0, 3 = 0.5 * 4.0, 2 = 1.0; 5 is past. user 1 (2 3 4): 3 is past
    assert set(got) == {(0, 6), (0, 3), (0, 2)}
    scores = np.array([2.5, 2.0, 1.0])
    expected = scores - np.log(np.exp(scores).sum())
    assert [got[(0, 6)], got[(0, 3)], got[(0, 2)]] == pytest.approx(expected.tolist())
    # the newest item alone, at a quarter of the scale
    sample, item, logp = cooccurrence_candidates(valid, table, CooccurrencePooling([0.5], scale=0.25, items=1))
    scores = 0.25 * np.array([2.0, 1.0])
    assert sample.tolist() == [0, 0] and item.tolist() == [2, 6]
    assert logp.tolist() == pytest.approx((scores[::-1] - np.log(np.exp(scores).sum())).tolist())
    assert cooccurrence_candidates(valid, Neighbors(*(np.zeros(0),) * 3), CooccurrencePooling([0.5]))[0].size == 0


def test_the_cooccurrence_expert_is_chosen_on_the_validation_session_and_travels_in_the_head(monkeypatch):
    log = _walks(200, _next, seed=0)
    valid = eval_set(log, "last_session", "valid", max_history=50)
    train = training_prefix(log, "last_session", users="all")
    grid = load_parameters().repeat.model_copy(update={"successor_weights": [0.0]})
    neighbors = cooccurrence_table(train, grid.cooccurrence, window=3, chunk_events=1000)
    n = valid.n_samples
    targets = np.array([t[0] for t in valid.targets])
    blind = Ranking(np.tile(np.array([[60, 61, 62]]), (n, 1)), np.tile(np.array([[-1.0, -1.1, -1.2]]), (n, 1)))
    head = fit_repeat_explore(valid, blind, 1, 70, grid, neighbors=neighbors)
    pooled = head.cooccurrence
    assert not head.uses_successors and head.uses_cooccurrence and pooled.weight[0] > 0
    assert (pooled.width, pooled.window) == (neighbors.width, 3) and pooled.scale in grid.cooccurrence_scales
    # the walk's next item co-occurs with the three newest items, the one after it with two of them
    ranked = mixture_ranking(valid, RepeatInputs(valid, 1), blind, head, k=3, neighbors=neighbors)
    assert (ranked.items[:, 0] == targets).mean() > 0.9
    again = Mixture.from_dict(head.to_dict())
    assert again.cooccurrence == pooled
    with pytest.raises(ValueError, match="co-occurring items"):
        mixture_ranking(valid, RepeatInputs(valid, 1), blind, again, k=3)
    # a head saved without the expert reads back without it
    assert Mixture.from_dict({k: v for k, v in head.to_dict().items() if k != "cooccurrence"}).cooccurrence is None
    # weight 0 leaves the explore side exactly the model's
    off = Mixture.from_dict(head.to_dict() | {"cooccurrence": asdict(replace(pooled, weight=[0.0]))})
    assert not off.uses_cooccurrence
    assert explore_side(valid, blind, off.successors, None, off.cooccurrence, neighbors)[1].tolist() == \
        explore_side(valid, blind, off.successors, None)[1].tolist()
    # a model that is right, against co-occurrences that point elsewhere: the model alone
    knows = Ranking(np.stack([targets, np.full(n, 61), np.full(n, 62)], 1), np.tile(np.array([[-1.0, -2.0, -3.0]]),
                                                                                 (n, 1)))
    wrong = cooccurrence_table(training_prefix(_walks(60, lambda i: (i + 7) % 59 + 1, seed=1), "last_session",
                                               users="all"), grid.cooccurrence, window=3, chunk_events=1000)
    assert fit_cooccurrence(valid, knows, None, None, wrong, grid, n_behaviors=1) is None
    # an expert the explore side alone would keep but the whole mixture ranks worse with is dropped
    harmful = CooccurrencePooling([0.9], 1.0, 3, 0.7, wrong.width, 3)
    monkeypatch.setattr(repeat, "fit_cooccurrence", lambda *args, **kwargs: harmful)
    assert fit_repeat_explore(valid, knows, 1, 70, grid, neighbors=wrong).cooccurrence is None
    # the same setting over the walk's own co-occurrences, for the blind model: the mixture gains, it stays
    assert fit_repeat_explore(valid, blind, 1, 70, grid, neighbors=neighbors).cooccurrence == harmful


def test_cooccurrence_weights_outside_0_to_1_and_scales_not_above_0_are_refused():
    grid = load_parameters().repeat.model_dump()
    with pytest.raises(ValueError, match=r"out of range: \['cooccurrence_weights'\]"):
        RepeatParams(**(grid | {"cooccurrence_weights": [0.0, 1.0]}))
    with pytest.raises(ValueError, match=r"out of range: \['cooccurrence_scales'\]"):
        RepeatParams(**(grid | {"cooccurrence_scales": [0.0]}))
