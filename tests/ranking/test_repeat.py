"""Repeat-aware ranking (ranking/repeat.py): the repeat scorer by hand, the mixture at its extremes, and that
nothing from the test window reaches the fitted parameters."""

import numpy as np
import polars as pl
import pytest

from seqrec_pipeline.params import load_parameters
from seqrec_pipeline.ranking import Ranking
from seqrec_pipeline.ranking.repeat import (
    Mixture,
    _neighbor_scores,
    RepeatInputs,
    RepeatScorer,
    choose_repeat_ranker,
    fit_repeat_ranker,
    ranker_scores,
    fit_mixture,
    fit_repeat_explore,
    fit_repeat_scorer,
    item_log_share,
    mixture_ranking,
    tifu_ranking,
)
from seqrec_pipeline.ranking.successors import successor_table
from seqrec_pipeline.splits import eval_set, training_prefix

DAY = 86400


def sequences(test_items=(3, 9)) -> pl.DataFrame:
    """user 0, behaviors view 0 / buy 1:
    session 0 (day 0): 1 view, 2 view, 3 view | session 1 (day 2): 2 view, 4 buy | session 2 (day 3): valid 2 buy
    | session 3 (day 4): test = ``test_items`` viewed."""
    items = [1, 2, 3, 2, 4, 2, *test_items]
    behaviors = [0, 0, 0, 0, 1, 1] + [0] * len(test_items)
    times = [0, 60, 120, 2 * DAY, 2 * DAY + 60, 3 * DAY] + [4 * DAY + 60 * i for i in range(len(test_items))]
    sessions = [0, 0, 0, 1, 1, 2] + [3] * len(test_items)
    return pl.DataFrame(
        {"user_idx": [0], "item": [items], "behavior": [behaviors], "timestamp": [times], "session": [sessions],
         "n_events": [len(items)], "last_session_valid": [5], "last_session_test": [6],
         "last_event_valid": [len(items) - 2], "last_event_test": [len(items) - 1]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32),
                          "timestamp": pl.List(pl.Int64)},
    )


def test_repeat_scores_by_hand():
    data = eval_set(sequences(), "last_session", "test", max_history=50)  # one sample: views, targets 3 and 9
    assert data.targets == [[3, 9]] and data.repeat == [[True, False]]
    inputs = RepeatInputs(data, 2)
    scorer = RepeatScorer([[1.0, 4.0], [1.0, 1.0]], day_decay=0.5, session_decay=0.5)
    features = inputs.features(scorer.day_decay, scorer.session_decay)
    scores = dict(zip(features.item.tolist(), (features.by_behavior @ np.array([1.0, 4.0])).tolist()))
    # ages (days to the window at day 4): item 1 ~4, 2 ~4 and 2 and 1 (buy), 3 ~4, 4 (buy) ~2;
    # later events in the same session: 1 -> 2, 2 -> 1 / 1 / 0, 3 -> 0, 4 -> 0
    age = lambda t: (4 * DAY - t) / DAY
    expected = {
        1: 0.5 ** age(0) * 0.5 ** 2,
        2: 0.5 ** age(60) * 0.5 + 0.5 ** age(2 * DAY) * 0.5 + 4 * 0.5 ** age(3 * DAY),
        3: 0.5 ** age(120),
        4: 4 * 0.5 ** age(2 * DAY + 60),
    }
    assert scores.keys() == expected.keys()
    for item, value in expected.items():
        assert abs(scores[item] - value) < 1e-12
    ranking = tifu_ranking(data, inputs, scorer, n_items=10, k=3)
    assert ranking.items.tolist() == [sorted(expected, key=expected.get, reverse=True)[:3]]


def test_the_mixture_at_its_extremes():
    data = eval_set(sequences(), "last_session", "test", max_history=50)
    inputs = RepeatInputs(data, 2)
    scorer = RepeatScorer([[1.0, 1.0], [1.0, 1.0]], day_decay=1.0, session_decay=1.0)  # plain counts: 2 > 1 = 3 = 4
    base = Ranking(np.array([[9, 2, 7, 8]]), np.array([[-1.0, -2.0, -3.0, -4.0]], dtype=np.float32))
    always = Mixture(scorer, [np.inf, np.inf], [0.0, 0.0], [1.0, 1.0])
    # gate 1: the history items in pointer order (most probable first, ties: most recent), then the explore items
    assert mixture_ranking(data, inputs, base, always, k=7).items.tolist() == [[2, 4, 3, 1, 9, 7, 8]]
    never = Mixture(scorer, [-50.0, -50.0], [0.0, 0.0], [1.0, 1.0])
    # gate ~0: the model's own list (history item 2 is a repeat candidate, not an explore one) first
    assert mixture_ranking(data, inputs, base, never, k=3).items.tolist() == [[9, 7, 8]]
    half = Mixture(scorer, [0.0, 0.0], [0.0, 0.0], [1.0, 1.0])
    ranked = mixture_ranking(data, inputs, base, half, k=7)
    p_rep = {2: 3 / 6, 4: 1 / 6, 3: 1 / 6, 1: 1 / 6}  # item 2 is 3 of the 6 past events
    p_exp = dict(zip([9, 7, 8], np.exp([-1.0, -3.0, -4.0]) / np.exp([-1.0, -3.0, -4.0]).sum()))
    mixed = {i: 0.5 * p for i, p in p_rep.items()} | {i: 0.5 * p for i, p in p_exp.items()}
    np.testing.assert_allclose(ranked.scores[0], sorted(mixed.values(), reverse=True), rtol=1e-6)


def test_the_mixture_with_extra_evidence_for_the_history_and_the_gate():
    data = eval_set(sequences(), "last_session", "test", max_history=50)
    inputs = RepeatInputs(data, 2)
    scorer = RepeatScorer([[1.0, 1.0], [1.0, 1.0]], day_decay=1.0, session_decay=1.0)
    features = inputs.features(1.0, 1.0)
    base = Ranking(np.array([[9, 2, 7, 8]]), np.array([[-1.0, -2.0, -3.0, -4.0]], dtype=np.float32))
    half = Mixture(scorer, [0.0, 0.0], [0.0, 0.0], [1.0, 1.0])
    # a weight e^w per history item: P_repeat ∝ count · e^w (items 1, 2, 3, 4 with counts 1, 3, 1, 1)
    weight = {1: np.log(6.0), 2: 0.0, 3: 0.0, 4: np.log(2.0)}
    log_weight = np.array([weight[int(i)] for i in features.item])
    ranked = mixture_ranking(data, inputs, base, half, k=7, features=features, repeat_log_weight=log_weight)
    p_rep = {1: 6 / 12, 2: 3 / 12, 4: 2 / 12, 3: 1 / 12}
    p_exp = dict(zip([9, 7, 8], np.exp([-1.0, -3.0, -4.0]) / np.exp([-1.0, -3.0, -4.0]).sum()))
    mixed = {i: 0.5 * p for i, p in p_rep.items()} | {i: 0.5 * p for i, p in p_exp.items()}
    assert ranked.items[0].tolist() == sorted(mixed, key=mixed.get, reverse=True)
    np.testing.assert_allclose(ranked.scores[0], sorted(mixed.values(), reverse=True), rtol=1e-6)
    # a gate offset moves P(repeat): +50 puts every history item first, -50 leaves the model's list
    first = mixture_ranking(data, inputs, base, half, k=7, gate_offset=np.array([50.0])).items.tolist()
    assert first == [[2, 4, 3, 1, 9, 7, 8]]
    assert mixture_ranking(data, inputs, base, half, k=3, gate_offset=np.array([-50.0])).items.tolist() == [[9, 7, 8]]
    # zero evidence changes nothing
    plain = mixture_ranking(data, inputs, base, half, k=7)
    zero = mixture_ranking(data, inputs, base, half, k=7, repeat_log_weight=np.zeros(len(features.item)),
                           gate_offset=np.zeros(1))
    assert zero.items.tolist() == plain.items.tolist()
    np.testing.assert_allclose(zero.scores, plain.scores, rtol=1e-12)


def test_absolute_explore_probabilities_keep_the_models_confidence():
    data = eval_set(sequences(), "last_session", "test", max_history=50)
    inputs = RepeatInputs(data, 2)
    scorer = RepeatScorer([[1.0, 1.0], [1.0, 1.0]], day_decay=1.0, session_decay=1.0)
    half = Mixture(scorer, [0.0, 0.0], [0.0, 0.0], [2.0, 2.0])
    # absolute log-probabilities: the explore items carry little mass, so every history item comes first ...
    unsure = Ranking(np.array([[9, 2, 7, 8]]), np.log(np.array([[0.02, 0.3, 0.01, 0.005]], dtype=np.float32)))
    ranked = mixture_ranking(data, inputs, unsure, half, k=7, normalize_explore=False)
    assert ranked.items.tolist() == [[2, 4, 3, 1, 9, 7, 8]]
    p_exp = np.sqrt([0.02, 0.01, 0.005])  # exp(log p / tau), tau 2, not renormalized over the candidates
    np.testing.assert_allclose(ranked.scores[0][4:], 0.5 * p_exp, rtol=1e-6)
    # ... while the softmax over the candidates hands them all the explore mass (0.45, 0.32, 0.23 of it) and
    # puts every explore item above the history items with one event (0.5 * 1/6)
    assert mixture_ranking(data, inputs, unsure, half, k=7).items.tolist() == [[2, 9, 7, 8, 4, 3, 1]]


def test_fitting_never_reads_the_test_window():
    grid = load_parameters().repeat
    fitted = []
    for test_items in ((3, 9), (1, 2, 4, 8, 8, 9)):  # change the test session only
        seq = sequences(test_items)
        valid = eval_set(seq, "last_session", "valid", max_history=50)
        base = Ranking(np.array([[7, 6, 5]]), np.array([[-1.0, -2.0, -3.0]], dtype=np.float32))
        scorer, value = fit_repeat_scorer(valid, 2, 10, day_decays=grid.day_decays, session_decays=grid.session_decays,
                                          weights=grid.behavior_weights, neighbors=0, neighbor_weights=[0.0])
        head = fit_repeat_explore(valid, base, 2, 10, grid,
                                  successors=successor_table(training_prefix(seq, "last_session", users="all"), 50))
        fitted.append((scorer.to_dict(), value, head.to_dict()))
    assert fitted[0] == fitted[1]


def _cart_log(n_users: int = 40, seed: int = 0) -> pl.DataFrame:
    """Per user (behaviors view 0 / cart 1): session 0 (day 0) carts item c and views two others; session 1
    (day 1) views three more; the validation session (day 2) carts c again; the test session (day 3) views a new
    item.  The newest history items are views, the target is the older cart."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        c, *views = (int(i) for i in rng.choice(np.arange(1, 200), 7, replace=False))
        items = [views[0], c, views[1], views[2], views[3], views[4], c, views[5]]
        behaviors = [0, 1, 0, 0, 0, 0, 1, 0]
        times = [0, 60, 120, DAY, DAY + 60, DAY + 120, 2 * DAY, 3 * DAY]
        rows.append({"user_idx": u, "item": items, "behavior": behaviors, "timestamp": times,
                     "session": [0, 0, 0, 1, 1, 1, 2, 3], "n_events": 8, "last_session_valid": 6,
                     "last_session_test": 7, "last_event_valid": 6, "last_event_test": 7})
    return pl.DataFrame(rows, schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
                                                "session": pl.List(pl.Int32), "timestamp": pl.List(pl.Int64),
                                                "user_idx": pl.Int32})


def test_the_learned_ranker_finds_which_history_items_come_back():
    valid = eval_set(_cart_log(), "last_session", "valid", max_history=50)
    inputs = RepeatInputs(valid, 2)
    decays = [(1.0, 1.0), (0.5, 1.0)]
    ranker = fit_repeat_ranker(valid, 2, decays, l2=0.01, inputs=inputs)
    assert ranker == fit_repeat_ranker(valid, 2, decays, l2=0.01)  # deterministic
    z = ranker_scores(ranker, inputs)
    best = np.full(valid.n_samples, -np.inf)
    np.maximum.at(best, inputs.group_sample, z)
    top = inputs.group_item[z == best[inputs.group_sample]]
    assert top.tolist() == [t[0] for t in valid.targets]  # the carted item first for every user
    # plain counts with recency ties put the newest view first instead
    mixture = Mixture(RepeatScorer.uniform(2), [np.inf] * 2, [0.0] * 2, [1.0] * 2)
    base = Ranking(np.full((valid.n_samples, 1), 0), np.zeros((valid.n_samples, 1), np.float32))
    plain = mixture_ranking(valid, inputs, base, mixture, k=3)
    learned = mixture_ranking(valid, inputs, base, Mixture.from_dict(
        Mixture(RepeatScorer.uniform(2), [np.inf] * 2, [0.0] * 2, [1.0] * 2, ranker=ranker).to_dict()), k=3)
    assert (learned.items[:, 0] == np.array([t[0] for t in valid.targets])).all()
    assert (plain.items[:, 0] != np.array([t[0] for t in valid.targets])).all()
    # out of fold it still beats the recency-and-frequency scores, so the fit keeps it
    grid = load_parameters().repeat
    assert choose_repeat_ranker(valid, 2, RepeatScorer.uniform(2), grid) is not None


def test_only_the_chosen_samples_choose_the_gate():
    # even users cart a new item in the validation session (the base model's only candidate), odd users cart
    # their old cart again: the two halves want opposite gates
    new_cart = pl.concat_list(500 + pl.col("user_idx"), pl.col("item").list.last())
    seq = _cart_log().with_columns(pl.when(pl.col("user_idx") % 2 == 0)
                                   .then(pl.col("item").list.head(6).list.concat(new_cart))
                                   .otherwise(pl.col("item")).alias("item"))
    valid = eval_set(seq, "last_session", "valid", max_history=50)
    even = valid.user_idx[valid.sample_user] % 2 == 0
    assert [any(r) for r in valid.repeat] == (~even).tolist()
    new_item = np.where(even, 500 + valid.user_idx[valid.sample_user], 900)
    base = Ranking(new_item[:, None].astype(np.int64), np.zeros((valid.n_samples, 1), np.float32))
    grid = load_parameters().repeat
    scorer = RepeatScorer.uniform(2)

    def first_items(samples):
        mixture = fit_mixture(valid, base, scorer, 2, gates=grid.gates, gate_slopes=[0.0], temperatures=[1.0],
                              samples=samples)
        return mixture_ranking(valid, RepeatInputs(valid, 2), base, mixture, k=7).items[:, 0]

    assert (first_items(~even) != new_item).all()  # fitted on the repeats: history items first for everyone
    assert (first_items(even) == new_item).all()  # fitted on the explorers: the new item first for everyone
    assert (first_items(None) == first_items(np.ones(valid.n_samples, bool))).all()


def test_the_ranker_is_dropped_where_nothing_repeats():
    seq = _cart_log().with_columns(pl.col("item").list.eval(pl.element() + 1000 * pl.element().cum_count()))
    valid = eval_set(seq, "last_session", "valid", max_history=50)
    assert not any(r for rs in valid.repeat for r in rs)
    assert choose_repeat_ranker(valid, 2, RepeatScorer.uniform(2), load_parameters().repeat) is None


def test_recency_ranks_and_the_item_prior_by_hand():
    data = eval_set(sequences(), "last_session", "test", max_history=50)
    inputs = RepeatInputs(data, 2)
    # latest events before the test window: 2 (day 3), 4 (day 2 + 60 s), 3 (120 s), 1 (0 s)
    assert dict(zip(inputs.group_item.tolist(), inputs.group_recency.tolist())) == {2: 0, 4: 1, 3: 2, 1: 3}
    # training events = before the validation session: 1, 2, 3, 2, 4 (6 items in the catalog, add-one)
    prior = item_log_share(training_prefix(sequences(test_items=(3, 3, 9)), "last_session", users="all").item, 6)
    np.testing.assert_allclose(prior, np.round(np.log(np.array([1, 2, 3, 2, 2, 1]) / (5 + 6)), 4))


def _popular_log(n_users: int = 60, seed: int = 1) -> pl.DataFrame:
    """Per user: one session viewing a popular item p (one of three, each seen by many users) and a rare item r
    in a random order, then a validation session viewing p again, then a test session.  Counts are equal and
    recency is a coin flip: only the items' popularity tells which one comes back."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        p, r = int(rng.integers(0, 3)), 100 + u
        first, second = (p, r) if rng.random() < 0.5 else (r, p)
        rows.append({"user_idx": u, "item": [first, second, p, 200 + u], "behavior": [0, 0, 0, 0],
                     "timestamp": [0, 60, DAY, 2 * DAY], "session": [0, 0, 1, 2], "n_events": 4,
                     "last_session_valid": 2, "last_session_test": 3, "last_event_valid": 2, "last_event_test": 3})
    return pl.DataFrame(rows, schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
                                                "session": pl.List(pl.Int32), "timestamp": pl.List(pl.Int64),
                                                "user_idx": pl.Int32})


def test_the_ranker_uses_the_items_popularity_where_counts_tie():
    seq = _popular_log()
    valid = eval_set(seq, "last_session", "valid", max_history=50)
    inputs = RepeatInputs(valid, 1)
    prior = item_log_share(training_prefix(seq, "last_session", users="all").item, 300)
    grid = load_parameters().repeat
    targets = np.array([t[0] for t in valid.targets])
    ranker = choose_repeat_ranker(valid, 1, RepeatScorer.uniform(1), grid, inputs=inputs, item_prior=prior)
    assert ranker is not None and ranker.prior_items == len(prior)
    np.testing.assert_array_equal(ranker.item_prior, prior)
    saved = Mixture(RepeatScorer.uniform(1), [np.inf], [0.0], [1.0], ranker=ranker).to_dict()
    assert saved["ranker"]["prior_items"] == 300 and "item_prior" not in saved["ranker"]  # no catalog-sized list
    head = Mixture.from_dict(saved)
    base = Ranking(np.full((valid.n_samples, 1), 299), np.zeros((valid.n_samples, 1), np.float32))
    with pytest.raises(ValueError, match="count it first"):
        mixture_ranking(valid, inputs, base, head, k=2)
    head.count_item_prior(training_prefix(seq, "last_session", users="all").item)  # counted again, identical
    np.testing.assert_array_equal(head.ranker.item_prior, prior)
    assert (mixture_ranking(valid, inputs, base, head, k=2).items[:, 0] == targets).all()
    # a head saved with the whole prior in its JSON still ranks with it
    legacy = Mixture.from_dict(saved | {"ranker": {k: v for k, v in saved["ranker"].items() if k != "prior_items"}
                                        | {"item_prior": prior.tolist()}})
    assert legacy.ranker.prior_items == 300 and not legacy.needs_item_prior
    np.testing.assert_array_equal(mixture_ranking(valid, inputs, base, legacy, k=2).items,
                                  mixture_ranking(valid, inputs, base, head, k=2).items)
    # without the prior the ranker only has recency: half of the users get the rare item first
    counts_only = fit_repeat_ranker(valid, 1, [(1.0, 1.0)], l2=0.1, inputs=inputs)
    assert counts_only.prior_items == 0 and counts_only.item_prior is None
    plain = mixture_ranking(valid, inputs, base, Mixture(RepeatScorer.uniform(1), [np.inf], [0.0], [1.0],
                                                         ranker=counts_only), k=2)
    assert 0.2 < (plain.items[:, 0] == targets).mean() < 0.8


def test_neighbor_vectors_in_user_blocks_equal_the_dense_definition():
    """tifu's neighbors: the mean unit score vector of each user's most similar other users (cosine)."""
    rng = np.random.default_rng(4)
    rows = []
    for u in range(30):  # items of a pool of 10 at random ages: no two users equally similar to a third
        items = rng.integers(0, 10, 6).tolist() + [int(rng.integers(0, 10)), 50]
        times = np.sort(rng.integers(0, 2 * DAY, 6)).tolist() + [2 * DAY, 3 * DAY]
        rows.append({"user_idx": u, "item": items, "behavior": [0, 1, 0, 0, 1, 0, 0, 0], "timestamp": times,
                     "session": [0, 0, 0, 1, 1, 1, 2, 3], "n_events": 8, "last_session_valid": 6,
                     "last_session_test": 7, "last_event_valid": 6, "last_event_test": 7})
    seq = pl.DataFrame(rows, schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
                                               "session": pl.List(pl.Int32), "timestamp": pl.List(pl.Int64)})
    valid = eval_set(seq, "last_session", "valid", max_history=50)
    features = RepeatInputs(valid, 2).features(0.5, 1.0)
    user = valid.sample_user[features.sample]
    own = np.zeros((valid.n_users, 200))
    np.add.at(own, (user, features.item), features.by_behavior.sum(1))
    unit = own / np.linalg.norm(own, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :3]
    expected = unit[nearest].mean(1)[valid.sample_user]
    for block_entries in (1, 7 * valid.n_users, 1 << 24):  # one user per block, 7 per block, one block
        rows, cols, values = _neighbor_scores(valid, features, 200, 3, block_entries=block_entries)
        got = np.zeros_like(expected)
        got[rows, cols] = values
        np.testing.assert_allclose(got, expected, atol=1e-12)
