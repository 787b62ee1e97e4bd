"""Repeat-aware ranking: a personal recency-and-frequency repeat scorer and the repeat / explore mixture.

**Repeat scorer** (TIFU-KNN family: Hu et al., SIGIR 2020, "Modeling Personalized Item Frequency Information
for Next-basket Recommendation"; sessions play the role of baskets).  For a query (user, requested behavior
b) every past event e of the user with item i adds

    W[b, behavior(e)] * day_decay ** age_days(e) * session_decay ** later_in_session(e)

to the score of i, where ``age_days`` is the time from e to the start of the target window and
``later_in_session`` the number of later events in e's session.  ``W`` lets a buy query weight earlier carts
more than earlier views; both decays favor what the user did last.  The ``tifu`` rule ranks by these scores,
optionally blended (weight ``neighbor_weight``) with the mean normalized score vector of the user's
``neighbors`` most similar users (cosine), which is its only source of new items.

**Repeat / explore mixture** (in the spirit of RepeatNet: Ren et al., AAAI 2019).  For a query q

    P(i | q) = P(repeat | q) * P_repeat(i | q) + (1 - P(repeat | q)) * P_explore(i | q)

- ``P_repeat``: the repeat scores normalized over the user's history items (a distribution over them), or,
  where it ranks the validation session's repeats better out of fold, the **learned repeat ranker**'s softmax
  over them: per requested behavior, a log-linear score of the item's decayed event counts per history behavior
  at every decay of the grids (``log1p``), the item's recency rank among the user's items and its popularity
  in the training events (log share; a trending item is more likely to come back), standardized, fitted by the
  listwise likelihood of the validation session's repeat targets with an L2 penalty ``ranker_l2``
  (``fit_repeat_ranker``);
- ``P_explore``: the base model's distribution over the catalog **minus** the history (its top candidates'
  scores, softmax with temperature ``tau``), e.g. the constrained beam search of a generative model or the
  full-catalog softmax of a discriminative one; where it ranks the validation session better, pooled per
  requested behavior with the most frequent successors of the user's newest history items (``successors.py``,
  weight and items read: ``successors``) and then, where that ranks it better still, with
  the items that co-occur with them (PPMI, as the ``item_knn`` rule: ``cooccurrence``);
- ``P(repeat | q) = sigmoid(gate_bias[b] + gate_slope[b] * log(total repeat score))``: per requested behavior,
  and higher when the user's repeat evidence is strong (many, recent, high-intent events).

All parameters are chosen on the **validation** session (targets = its items, history = everything before
it) by maximizing NDCG@k over small grids (``fit_repeat_scorer``, ``fit_mixture``); test targets are never
read.  Everything is vectorized over (sample, event) pairs: no per-user or per-beam Python loop.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
import scipy.sparse

from seqrec_pipeline.splits import EvalSet

from .core import Ranking, softmax_per_sample
from .successors import (CooccurrencePooling, Neighbors, SuccessorPooling, Successors, cooccurrence_candidates,
                         product_of_experts, successor_candidates)

SECONDS_PER_DAY = 86400.0


# ----------------------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------------------


@dataclass
class RepeatScorer:
    """The repeat scorer's parameters (see the module docstring)."""

    behavior_weights: list[list[float]]  # [requested behavior][history behavior]
    day_decay: float = 1.0
    session_decay: float = 1.0
    neighbors: int = 0
    neighbor_weight: float = 0.0

    @classmethod
    def uniform(cls, n_behaviors: int) -> RepeatScorer:
        return cls([[1.0] * n_behaviors for _ in range(n_behaviors)])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Mixture:
    """The repeat / explore mixture: a repeat scorer and, per requested behavior, the gate and temperature."""

    scorer: RepeatScorer
    gate_bias: list[float]  # per behavior; +inf = always repeat first
    gate_slope: list[float]
    temperature: list[float]
    validation: dict = field(default_factory=dict)  # what the fit measured (NDCG@k on validation)
    ranker: RepeatRanker | None = None  # the learned P_repeat; None: the scorer's normalized scores
    # the explore side's experts pooled with the model (None: not pooled): the successors, then the co-occurring items
    successors: SuccessorPooling | None = None
    cooccurrence: CooccurrencePooling | None = None

    def to_dict(self) -> dict:
        out = asdict(replace(self, ranker=None))
        out["gate_bias"] = [None if np.isinf(v) else v for v in self.gate_bias]  # JSON has no infinity
        out["ranker"] = self.ranker.to_dict() if self.ranker is not None else None
        return out

    @classmethod
    def from_dict(cls, values: dict) -> Mixture:
        ranker, successors = values.get("ranker"), values.get("successors")
        if successors is None and values.get("successor_weight"):  # heads saved with flat successor_* keys
            successors = {key: values[f"successor_{key}"] for key in ("weight", "window", "decay", "width")
                          if f"successor_{key}" in values}
        return cls(RepeatScorer(**values["scorer"]), [np.inf if v is None else v for v in values["gate_bias"]],
                   list(values["gate_slope"]), list(values["temperature"]), dict(values.get("validation", {})),
                   RepeatRanker.from_dict(ranker) if ranker else None,
                   SuccessorPooling(**successors) if successors else None,
                   CooccurrencePooling(**values["cooccurrence"]) if values.get("cooccurrence") else None)

    def count_item_prior(self, items: np.ndarray) -> Mixture:
        """Give the learned ranker the item prior it reads, counted on ``items`` (the item ids of the events the
        ranking's other tables are counted on: the training events in an evaluation, the whole log in serving);
        nothing to do without one.  Returns the mixture itself."""
        if self.reads_item_prior:
            self.ranker.item_prior = item_log_share(items, self.ranker.prior_items)
        return self

    @property
    def reads_item_prior(self) -> bool:
        """Whether the learned ranker reads the items' prior (set by :meth:`count_item_prior`)."""
        return self.ranker is not None and self.ranker.prior_items > 0

    @property
    def needs_item_prior(self) -> bool:
        return self.reads_item_prior and self.ranker.item_prior is None

    @property
    def uses_successors(self) -> bool:
        return self.successors is not None and self.successors.active

    @property
    def uses_cooccurrence(self) -> bool:
        return self.cooccurrence is not None and self.cooccurrence.active


@dataclass
class RepeatRanker:
    """The learned repeat distribution (module docstring): ``z = ((x - mean) / scale) . weights[b]``."""

    decays: list[list[float]]  # (day_decay, session_decay) of each block of features
    mean: list[float]
    scale: list[float]
    weights: list[list[float]]  # [requested behavior][feature]
    # > 0: the features end with the recency rank and each item's log share of the counted events
    # (:func:`item_log_share` over a catalog of this size); 0: decayed counts only
    prior_items: int = 0
    # those log shares: not saved with the head (one float per item), counted again from the events the ranking
    # reads (:meth:`Mixture.count_item_prior`)
    item_prior: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"decays": self.decays, "mean": self.mean, "scale": self.scale, "weights": self.weights,
                "prior_items": self.prior_items}

    @classmethod
    def from_dict(cls, values: dict) -> RepeatRanker:
        values = dict(values)
        prior = values.pop("item_prior", None)  # heads saved with the whole prior
        if prior is not None:
            return cls(**values, prior_items=len(prior), item_prior=np.asarray(prior, np.float64))
        return cls(**values)


# ----------------------------------------------------------------------------------------------------------
# Pairs of (sample, past event) and the per-(sample, item) repeat features
# ----------------------------------------------------------------------------------------------------------


@dataclass
class RepeatFeatures:
    """Per (sample, distinct past item) group: decayed event counts by history behavior for every decay setting
    is too much to keep, so the features are computed for one (day_decay, session_decay) at a time."""

    sample: np.ndarray  # [G] sample of each group
    item: np.ndarray  # [G]
    last_time: np.ndarray  # [G] time of the item's latest past event (ties: newer first)
    by_behavior: np.ndarray  # [G, B] decayed counts per history behavior


class RepeatInputs:
    """The (sample, past event) pairs of an evaluation set, built once; :meth:`features` applies the decays."""

    def __init__(self, data: EvalSet, n_behaviors: int):
        self.data, self.n_behaviors = data, n_behaviors
        lengths = np.diff(data.past_offsets)
        per_sample = lengths[data.sample_user]
        self.pair_sample = np.repeat(np.arange(data.n_samples), per_sample)
        first = np.repeat(data.past_offsets[:-1][data.sample_user], per_sample)
        self.pair_event = first + (np.arange(len(self.pair_sample)) - np.repeat(np.cumsum(per_sample) - per_sample,
                                                                               per_sample))
        # per past event: age in days and the number of later events of its session
        user = np.repeat(np.arange(data.n_users), lengths)
        age = (data.window_time[user] - data.past_time) / SECONDS_PER_DAY
        self.age_days = np.maximum(age, 0.0)
        session_key = user * (int(data.past_session.max(initial=0)) + 1) + data.past_session
        _, inverse, counts = np.unique(session_key, return_inverse=True, return_counts=True)
        position = np.arange(len(session_key)) - np.searchsorted(session_key, session_key)  # past is ordered
        self.later_in_session = counts[inverse] - 1 - position
        item = data.past_item[self.pair_event]
        width = np.int64(int(data.past_item.max(initial=0)) + 1)
        keys, self.group = np.unique(self.pair_sample * width + item, return_inverse=True)
        self.group_sample, self.group_item = keys // width, keys % width
        self.group_last_time = np.full(len(keys), np.iinfo(np.int64).min)
        np.maximum.at(self.group_last_time, self.group, data.past_time[self.pair_event])
        newest_first = np.lexsort((-self.group_last_time, self.group_sample))
        self.group_recency = np.empty(len(keys), np.int64)  # 0 = the sample's most recent item
        self.group_recency[newest_first] = np.arange(len(keys)) - np.searchsorted(self.group_sample,
                                                                                  self.group_sample[newest_first])
        self._log_counts: tuple[tuple, np.ndarray] | None = None  # the ranker's features, asked once per grid point

    def features(self, day_decay: float, session_decay: float) -> RepeatFeatures:
        weight = (day_decay ** self.age_days) * (session_decay ** self.later_in_session)
        behavior = self.data.past_behavior[self.pair_event]
        counts = np.zeros((len(self.group_sample), self.n_behaviors))
        np.add.at(counts, (self.group, behavior), weight[self.pair_event])
        return RepeatFeatures(self.group_sample, self.group_item, self.group_last_time, counts)


def ranker_features(inputs: RepeatInputs, decays) -> np.ndarray:
    """``[groups, len(decays) * behaviors]``: log1p of each (sample, item) group's decayed counts per history
    behavior, for every (day_decay, session_decay) in ``decays`` (kept on ``inputs`` for the last ``decays``)."""
    key = tuple(tuple(map(float, d)) for d in decays)
    if inputs._log_counts is None or inputs._log_counts[0] != key:
        inputs._log_counts = (key, np.log1p(np.concatenate([inputs.features(d, s).by_behavior for d, s in decays],
                                                             axis=1)))
    return inputs._log_counts[1]


def item_log_share(train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Each item's log share of the training events (their item ids, e.g. ``splits.training_prefix(...).item``;
    add-one smoothed): the ranker's popularity prior."""
    counts = np.bincount(np.asarray(train_items, np.int64), minlength=n_items)[:n_items]
    return np.round(np.log((counts + 1.0) / (counts.sum() + n_items)), 4)


def ranker_matrix(inputs: RepeatInputs, decays, item_prior) -> np.ndarray:
    """The ranker's raw features of every group: :func:`ranker_features`, then with ``item_prior`` the log1p
    recency rank and the item's prior (items outside the prior get its minimum)."""
    counts = ranker_features(inputs, decays)
    if item_prior is None:
        return counts
    prior = np.asarray(item_prior, np.float64)
    item = inputs.group_item
    known = item < len(prior)
    log_share = np.where(known, prior[np.where(known, item, 0)], prior.min(initial=0.0))
    return np.column_stack([counts, np.log1p(inputs.group_recency), log_share])


def ranker_scores(ranker: RepeatRanker, inputs: RepeatInputs) -> np.ndarray:
    """The ranker's log-linear score of every (sample, item) group of ``inputs``."""
    if ranker.prior_items and ranker.item_prior is None:
        raise ValueError("the repeat ranker reads the items' popularity: count it first (Mixture.count_item_prior)")
    prior = ranker.item_prior if ranker.prior_items else None
    x = (ranker_matrix(inputs, ranker.decays, prior) - np.asarray(ranker.mean)) / np.asarray(ranker.scale)
    return (x * np.asarray(ranker.weights)[inputs.data.sample_behavior[inputs.group_sample]]).sum(1)


def _group_is_target(inputs: RepeatInputs) -> np.ndarray:
    data = inputs.data
    width = np.int64(max(int(inputs.group_item.max(initial=0)), max((max(t, default=0) for t in data.targets),
                                                                     default=0)) + 1)
    lengths = np.fromiter((len(t) for t in data.targets), np.int64, data.n_samples)
    target_keys = np.repeat(np.arange(data.n_samples), lengths) * width + np.fromiter(
        (i for t in data.targets for i in t), np.int64, int(lengths.sum()))
    return np.isin(inputs.group_sample * width + inputs.group_item, target_keys)


def fit_repeat_ranker(valid: EvalSet, n_behaviors: int, decays, l2: float, inputs: RepeatInputs | None = None,
                      samples: np.ndarray | None = None, item_prior: np.ndarray | None = None) -> RepeatRanker:
    """Fit :class:`RepeatRanker` on ``valid`` (only its ``samples``, a bool mask, if given): per requested
    behavior, maximize the mean log-likelihood of a sample's repeat targets under the softmax of ``z`` over its
    history items (samples without a repeat target carry no information here), minus ``l2 * |w|^2``; L-BFGS in
    float64, so the fit is deterministic."""
    import torch

    inputs = inputs or RepeatInputs(valid, n_behaviors)
    used = np.ones(valid.n_samples, bool) if samples is None else samples
    x = ranker_matrix(inputs, decays, item_prior)
    fitted = x[used[inputs.group_sample]]
    mean = fitted.mean(0) if len(fitted) else np.zeros(x.shape[1])
    scale = fitted.std(0) if len(fitted) else np.ones(x.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    x = (x - mean) / scale
    positive = _group_is_target(inputs)
    weights = np.zeros((n_behaviors, x.shape[1]))
    for b in range(n_behaviors):
        rows = (valid.sample_behavior[inputs.group_sample] == b) & used[inputs.group_sample]
        informative = np.zeros(valid.n_samples, bool)
        informative[inputs.group_sample[rows & positive]] = True
        rows &= informative[inputs.group_sample]
        if not rows.any():
            continue
        _, sample = np.unique(inputs.group_sample[rows], return_inverse=True)
        n = int(sample.max()) + 1
        xs, sample = torch.from_numpy(x[rows]), torch.from_numpy(sample)
        pos = torch.from_numpy(positive[rows]).double()
        n_pos = torch.zeros(n, dtype=torch.float64).index_add(0, sample, pos)
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def loss():
            optimizer.zero_grad()
            z = xs @ w
            peak = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, sample, z.detach(), "amax")
            total = torch.zeros(n, dtype=torch.float64).index_add(0, sample, torch.exp(z - peak[sample]))
            log_norm = peak + torch.log(total)
            log_lik = torch.zeros(n, dtype=torch.float64).index_add(0, sample, z * pos) / n_pos - log_norm
            value = -log_lik.mean() + l2 * (w * w).sum()
            value.backward()
            return value

        optimizer.step(loss)
        weights[b] = w.detach().numpy()
    prior = None if item_prior is None else np.asarray(item_prior, np.float64)
    return RepeatRanker([list(map(float, d)) for d in decays], mean.tolist(), scale.tolist(), weights.tolist(),
                        0 if prior is None else len(prior), prior)


def ranker_decays(grid) -> list[tuple[float, float]]:
    """The ranker's feature blocks: every day decay of the grid (no session decay), then every session decay
    below 1 (no day decay)."""
    return [(d, 1.0) for d in grid.day_decays] + [(1.0, s) for s in grid.session_decays if s < 1]


def _repeat_only_ndcg(data: EvalSet, inputs: RepeatInputs, score: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of the history items alone, ranked by the log-score ``score`` (higher first), over every sample."""
    peak = np.full(data.n_samples, -np.inf)
    np.maximum.at(peak, inputs.group_sample, score)
    positive = np.exp(score - peak[inputs.group_sample])  # 1 for each sample's best: no underflow to "no score"
    items, _ = top_items(inputs.group_sample, inputs.group_item, np.where(np.isfinite(score), positive, 0.0),
                         inputs.group_last_time, data.n_samples, k)
    return _ndcg(items, data.targets, k)


def choose_repeat_ranker(valid: EvalSet, n_behaviors: int, scorer: RepeatScorer, grid, k: int = 10,
                         folds: int = 2, inputs: RepeatInputs | None = None,
                         item_prior: np.ndarray | None = None) -> RepeatRanker | None:
    """The best ranker, fitted on the whole validation session, if it ranks the history items better than the
    (in-sample) scorer; otherwise None.  Each candidate (the decayed counts; with ``item_prior`` also the counts
    with the recency rank and the prior) is fitted on ``folds - 1`` user folds and scored on the held-out one
    (NDCG@k of the history items alone, summed over the folds)."""
    decays = ranker_decays(grid)
    inputs = inputs or RepeatInputs(valid, n_behaviors)
    fold = valid.sample_user % folds
    held_out = {}
    for prior in [None] if item_prior is None else [None, item_prior]:
        values = np.zeros(valid.n_samples)
        for f in range(folds):
            ranker = fit_repeat_ranker(valid, n_behaviors, decays, grid.ranker_l2, inputs, samples=fold != f,
                                       item_prior=prior)
            values[fold == f] = _repeat_only_ndcg(valid, inputs, ranker_scores(ranker, inputs), k)[fold == f]
        held_out[prior is not None] = values.mean()
    features = inputs.features(scorer.day_decay, scorer.session_decay)
    with np.errstate(divide="ignore"):  # a zero score is no candidate (log 0 = -inf), as in the mixture
        plain = _repeat_only_ndcg(valid, inputs, np.log(repeat_scores(features, valid, scorer.behavior_weights)), k)
    with_prior = max(held_out, key=lambda key: (held_out[key], not key))  # a tie keeps the plain counts
    if held_out[with_prior] <= plain.mean():
        return None
    return fit_repeat_ranker(valid, n_behaviors, decays, grid.ranker_l2, inputs,
                             item_prior=item_prior if with_prior else None)


def repeat_side(mixture: Mixture) -> str:
    """What ranks the history items in a fitted mixture, for the logs."""
    if mixture.ranker is None:
        return "recency-and-frequency scores (the learned ranker was not better)"
    extra = ", recency rank and popularity" if mixture.ranker.prior_items else ""
    return f"learned ranker of decayed counts{extra}"


def explore_pooling(mixture: Mixture) -> str:
    """What the model's explore candidates are pooled with in a fitted mixture, for the logs."""
    parts = []
    if mixture.uses_successors:
        window = mixture.successors.window
        items = "last item" if window == 1 else f"{window} newest items"
        parts.append(f"the successors of the {items}, weight per behavior {mixture.successors.weight}")
    if mixture.uses_cooccurrence:
        parts.append(f"the co-occurring items of the {mixture.cooccurrence.items} newest items, weight per behavior "
                     f"{mixture.cooccurrence.weight}")
    return "; ".join(parts) or "the model alone"


def repeat_scores(features: RepeatFeatures, data: EvalSet, weights: np.ndarray) -> np.ndarray:
    """Score of every (sample, past item) group: its decayed counts weighted by the requested behavior's row."""
    return (features.by_behavior * np.asarray(weights)[data.sample_behavior[features.sample]]).sum(1)


# ----------------------------------------------------------------------------------------------------------
# Ranking sparse (sample, item, score) triplets
# ----------------------------------------------------------------------------------------------------------


def top_items(sample: np.ndarray, item: np.ndarray, score: np.ndarray, tiebreak: np.ndarray, n_samples: int,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per sample from triplets (higher score, then higher tiebreak first); items with a
    score <= 0 are left out.  Returns (items, scores) ``[n_samples, k]`` with -1 / -inf in empty slots."""
    keep = score > 0
    sample, item, score, tiebreak = sample[keep], item[keep], score[keep], tiebreak[keep]
    order = np.lexsort((-tiebreak, -score, sample))
    sample, item, score = sample[order], item[order], score[order]
    rank = np.arange(len(sample)) - np.searchsorted(sample, sample)
    inside = rank < k
    items = np.full((n_samples, k), -1, dtype=np.int64)
    scores = np.full((n_samples, k), -np.inf, dtype=np.float32)
    items[sample[inside], rank[inside]] = item[inside]
    scores[sample[inside], rank[inside]] = score[inside]
    return items, scores


def _ndcg(items: np.ndarray, targets: list[list[int]], k: int) -> np.ndarray:
    from .metrics import per_sample_metrics

    return per_sample_metrics(items, targets, ks=(k,))[f"ndcg@{k}"]


# ----------------------------------------------------------------------------------------------------------
# The tifu rule
# ----------------------------------------------------------------------------------------------------------


def _neighbor_scores(data: EvalSet, features: RepeatFeatures, n_items: int, neighbors: int,
                     block_entries: int = 1 << 24):
    """Per sample, the mean of its ``neighbors`` most similar users' normalized score vectors (cosine over
    users' behavior-agnostic vectors), as (sample, item, score) triplets.  Similarities are computed for blocks
    of users of about ``block_entries`` (user, user) pairs, so memory does not grow with users squared."""
    user = data.sample_user[features.sample]
    own = scipy.sparse.csr_matrix((features.by_behavior.sum(1), (user, features.item)), shape=(data.n_users, n_items))
    norms = np.sqrt(own.multiply(own).sum(1)).A.ravel()
    unit = (scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ own).tocsr()
    k = min(neighbors, max(data.n_users - 1, 1))
    nearest = np.empty((data.n_users, k), np.int64)
    step = max(1, block_entries // max(data.n_users, 1))
    for lo in range(0, data.n_users, step):
        hi = min(lo + step, data.n_users)
        similarity = (unit[lo:hi] @ unit.T).toarray()
        similarity[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # never one's own neighbor
        nearest[lo:hi] = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    mean = scipy.sparse.csr_matrix(
        (np.full(nearest.size, 1.0 / k), (np.repeat(np.arange(data.n_users), k), nearest.ravel())),
        shape=(data.n_users, data.n_users)) @ unit
    blended = mean[data.sample_user].tocoo()
    return blended.row.astype(np.int64), blended.col.astype(np.int64), blended.data


def tifu_ranking(data: EvalSet, inputs: RepeatInputs, scorer: RepeatScorer, n_items: int, k: int) -> Ranking:
    """The tifu rule's top ``k`` items: repeat scores normalized per sample, blended with the neighbors'."""
    features = inputs.features(scorer.day_decay, scorer.session_decay)
    scores = repeat_scores(features, data, scorer.behavior_weights)
    total = np.bincount(features.sample, weights=scores, minlength=data.n_samples)
    own = scores / np.maximum(total[features.sample], 1e-300)
    if scorer.neighbor_weight <= 0 or scorer.neighbors <= 0:
        return Ranking(*top_items(features.sample, features.item, own, features.last_time, data.n_samples, k))
    rows, cols, values = _neighbor_scores(data, features, n_items, scorer.neighbors)
    width = np.int64(n_items)
    keys = np.concatenate([features.sample * width + features.item, rows * width + cols])
    weighted = np.concatenate([(1 - scorer.neighbor_weight) * own, scorer.neighbor_weight * values])
    tiebreak = np.concatenate([features.last_time, np.full(len(rows), np.iinfo(np.int64).min)])
    unique, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=weighted)
    latest = np.full(len(unique), np.iinfo(np.int64).min)
    np.maximum.at(latest, inverse, tiebreak)
    return Ranking(*top_items(unique // width, unique % width, summed, latest, data.n_samples, k))


def fit_repeat_scorer(valid: EvalSet, n_behaviors: int, n_items: int, *, day_decays, session_decays, weights,
                      neighbors: int, neighbor_weights, k: int = 10, sweeps: int = 2,
                      inputs: RepeatInputs | None = None) -> tuple[RepeatScorer, float]:
    """Choose the scorer on the validation set: decays by grid, behavior weights by coordinate descent (each
    entry over ``weights``, per requested behavior), then the neighbor blend; by merged NDCG@k."""
    inputs = inputs or RepeatInputs(valid, n_behaviors)
    best = RepeatScorer.uniform(n_behaviors)
    behavior_of = valid.sample_behavior

    def evaluate(scorer: RepeatScorer) -> np.ndarray:
        return _ndcg(tifu_ranking(valid, inputs, scorer, n_items, k).items, valid.targets, k)

    for _ in range(sweeps):
        trials = [(evaluate(RepeatScorer(best.behavior_weights, d, s)).mean(), (d, s))
                  for d, s in itertools.product(day_decays, session_decays)]
        best.day_decay, best.session_decay = max(trials, key=lambda t: t[0])[1]
        for b, h in itertools.product(range(n_behaviors), range(n_behaviors)):
            if not (behavior_of == b).any():
                continue
            results = []
            for w in weights:
                matrix = [row[:] for row in best.behavior_weights]
                matrix[b][h] = float(w)
                if not any(matrix[b]):
                    continue
                ndcg = evaluate(RepeatScorer(matrix, best.day_decay, best.session_decay))
                results.append((ndcg[behavior_of == b].mean(), -abs(np.log2(max(w, 1e-3))), w))
            best.behavior_weights[b][h] = float(max(results)[2])  # ties: the weight closest to 1
    base = evaluate(best).mean()
    for alpha in neighbor_weights:
        if alpha > 0 and neighbors > 0:
            value = evaluate(RepeatScorer(best.behavior_weights, best.day_decay, best.session_decay, neighbors,
                                          alpha)).mean()
            if value > base:
                base, best.neighbors, best.neighbor_weight = value, neighbors, float(alpha)
    return best, float(base)


# ----------------------------------------------------------------------------------------------------------
# The repeat / explore mixture over a base ranker
# ----------------------------------------------------------------------------------------------------------


def explore_candidates(data: EvalSet, base: Ranking) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The base ranking's items outside the user's history as (sample, item, score) triplets."""
    if base.scores is None:
        raise ValueError("the repeat/explore mixture needs the base ranker's scores")
    keep = (base.items >= 0) & ~data.in_past(base.items) & np.isfinite(base.scores)
    sample = np.broadcast_to(np.arange(len(base.items))[:, None], base.items.shape)
    return sample[keep], base.items[keep], base.scores[keep].astype(np.float64)


def explore_side(data: EvalSet, base: Ranking, pooling: SuccessorPooling | None = None,
                 successors: Successors | None = None, cooccurrence: CooccurrencePooling | None = None,
                 neighbors: Neighbors | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The explore side's (sample, item, score) triplets: the base ranking's candidates outside the history,
    pooled with the successors (table ``successors``) of the ``pooling.window`` newest history items where
    ``pooling.weight`` (per behavior) is above 0, then with the co-occurring items (table ``neighbors``) where
    ``cooccurrence.weight`` is."""
    out = explore_candidates(data, base)
    if pooling is not None and pooling.active:
        if successors is None:
            raise ValueError("this mixture pools the recent items' successors: pass their table (successor_table)")
        weight = np.asarray(pooling.weight, float)[data.sample_behavior]
        out = product_of_experts(out, successor_candidates(data, successors, pooling.window, pooling.decay), weight,
                                 data.n_samples)
    if cooccurrence is not None and cooccurrence.active:
        if neighbors is None:
            raise ValueError("this mixture pools the co-occurring items: pass their table (cooccurrence_table)")
        weight = np.asarray(cooccurrence.weight, float)[data.sample_behavior]
        out = product_of_experts(out, cooccurrence_candidates(data, neighbors, cooccurrence), weight, data.n_samples)
    return out


def _best_weights(valid: EvalSet, model: tuple[np.ndarray, np.ndarray, np.ndarray],
                  found: tuple[np.ndarray, np.ndarray, np.ndarray], weights, n_behaviors: int,
                  k: int) -> tuple[float, list[float]]:
    """Per requested behavior, the weight (from ``weights`` and 0) of the expert's candidates ``found`` pooled with
    ``model`` whose explore side alone ranks that behavior's validation samples best (NDCG@k; history items are
    never candidates, so only new targets count; ties keep the smaller weight), and the sample-weighted NDCG of
    those choices."""
    rows = [valid.sample_behavior == b for b in range(n_behaviors)]
    best = [(-1.0, 0.0)] * n_behaviors
    for w in sorted(set(float(v) for v in weights) | {0.0}):
        sample, item, score = product_of_experts(model, found, np.full(valid.n_samples, w), valid.n_samples)
        p = softmax_per_sample(sample, score, valid.n_samples) if len(sample) else score
        ndcg = _ndcg(top_items(sample, item, p, np.zeros(len(sample), np.int64), valid.n_samples, k)[0],
                     valid.targets, k)
        best = [(float(ndcg[r].mean()), w) if r.any() and ndcg[r].mean() > best[b][0] + 1e-12 else best[b]
                for b, r in enumerate(rows)]
    total = sum(best[b][0] * rows[b].sum() for b in range(n_behaviors) if rows[b].any()) / valid.n_samples
    return total, [best[b][1] for b in range(n_behaviors)]


def fit_successors(valid: EvalSet, base: Ranking, successors: Successors, weights, windows, decay: float,
                   n_behaviors: int, k: int = 10, width: int | None = None) -> SuccessorPooling | None:
    """The successors expert's settings whose explore side alone ranks the validation session best (NDCG@k;
    history items are never candidates there, so only new targets count): per requested behavior the weight
    (from ``weights``), per head the window (from ``windows``: newest history items read, ``decay`` apart);
    ``width``: the successors kept per item when ``successors`` was counted (recorded to count it again; None:
    the most any item of ``successors`` keeps).
    Ties keep the smaller weight and the smaller window; None where every behavior keeps weight 0."""
    model = explore_candidates(valid, base)
    chosen = (-1.0, [0.0] * n_behaviors, 1)
    for window in sorted(set(int(v) for v in windows)):
        total, weight = _best_weights(valid, model, successor_candidates(valid, successors, window, decay), weights,
                                      n_behaviors, k)
        if total > chosen[0] + 1e-12:
            chosen = (total, weight, window)
    pooling = SuccessorPooling(chosen[1], chosen[2], float(decay), successors.width if width is None else width)
    return pooling if pooling.active else None


def fit_cooccurrence(valid: EvalSet, base: Ranking, pooling: SuccessorPooling | None, successors: Successors | None,
                     neighbors: Neighbors, grid, n_behaviors: int, k: int = 10) -> CooccurrencePooling | None:
    """The co-occurrence expert's settings whose explore side (pooled after the successors' ``pooling``) ranks the
    validation session best, as :func:`fit_successors`: per requested behavior the weight (from
    ``grid.cooccurrence_weights``), for all the scale of the summed PPMI (``grid.cooccurrence_scales``).  Ties keep
    the smaller weight and scale; None where every behavior keeps weight 0."""
    model = explore_side(valid, base, pooling, successors)
    chosen = (-1.0, None)
    for scale in sorted(set(float(v) for v in grid.cooccurrence_scales)):
        setting = CooccurrencePooling([0.0] * n_behaviors, scale, grid.cooccurrence_items, grid.cooccurrence_decay,
                                      neighbors.width, neighbors.window)
        total, weight = _best_weights(valid, model, cooccurrence_candidates(valid, neighbors, setting),
                                      grid.cooccurrence_weights, n_behaviors, k)
        if total > chosen[0] + 1e-12:
            chosen = (total, replace(setting, weight=weight))
    return chosen[1] if chosen[1] is not None and chosen[1].active else None


def mixture_ranking(data: EvalSet, inputs: RepeatInputs, base: Ranking, mixture: Mixture, k: int,
                    features: RepeatFeatures | None = None, *, successors: Successors | None = None,
                    neighbors: Neighbors | None = None,
                    repeat_log_weight: np.ndarray | None = None, gate_offset: np.ndarray | None = None,
                    normalize_explore: bool = True) -> Ranking:
    """The mixture's top ``k`` items: scores are the mixture probabilities ``P(i | q)``.  ``successors``: the
    table the mixture's ``successors`` expert reads (``successors.successor_table``), when it has one;
    ``neighbors``: the table its ``cooccurrence`` expert reads (``successors.cooccurrence_table``), when it has one.

    Optional extra evidence (``benchmarks/repeat_headroom.py`` measures it; the pipeline passes none):
    ``repeat_log_weight`` per (sample, history item) group of ``features`` multiplies each repeat score by its
    exponential before normalization; ``gate_offset`` per sample is added to the gate's logit;
    ``normalize_explore=False`` takes ``exp(score / tau)`` of base scores that are already absolute
    log-probabilities instead of a softmax over the candidates (the model's own confidence, not renormalized)."""
    scorer = mixture.scorer
    features = features or inputs.features(scorer.day_decay, scorer.session_decay)
    p_rep, total = history_distribution(data, inputs, features, scorer, mixture.ranker, repeat_log_weight)
    return _combine(data, mixture, features, p_rep, total,
                    explore_side(data, base, mixture.successors, successors, mixture.cooccurrence, neighbors), k,
                    gate_offset=gate_offset, normalize_explore=normalize_explore)


def history_distribution(data: EvalSet, inputs: RepeatInputs, features: RepeatFeatures, scorer: RepeatScorer,
                         ranker: RepeatRanker | None, repeat_log_weight: np.ndarray | None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``P(i | repeat, q)`` per (sample, history item) group of ``features`` and the repeat evidence per sample
    (the gate's input); neither depends on the gate or the temperature."""
    rep = repeat_scores(features, data, scorer.behavior_weights)
    total = np.bincount(features.sample, weights=rep, minlength=data.n_samples)
    if ranker is not None:  # the learned distribution over the history items (features' group order)
        z = ranker_scores(ranker, inputs or RepeatInputs(data, len(scorer.behavior_weights)))
        if repeat_log_weight is not None:
            z = z + repeat_log_weight
        peak = np.full(data.n_samples, -np.inf)
        np.maximum.at(peak, features.sample, z)
        w = np.exp(z - peak[features.sample])
        p_rep = w / np.bincount(features.sample, weights=w, minlength=data.n_samples)[features.sample]
    elif repeat_log_weight is None:
        p_rep = rep / np.maximum(total[features.sample], 1e-300)
    else:
        log_w = np.where(rep > 0, np.log(np.maximum(rep, 1e-300)) + repeat_log_weight, -np.inf)
        peak = np.full(data.n_samples, -np.inf)
        np.maximum.at(peak, features.sample, log_w)
        w = np.where(rep > 0, np.exp(log_w - peak[features.sample]), 0.0)
        p_rep = w / np.maximum(np.bincount(features.sample, weights=w, minlength=data.n_samples)[features.sample],
                               1e-300)
    return p_rep, total


def _combine(data: EvalSet, mixture: Mixture, features: RepeatFeatures, p_rep: np.ndarray, total: np.ndarray,
             explore: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, *, gate_offset: np.ndarray | None = None,
             normalize_explore: bool = True) -> Ranking:
    """The top ``k`` of ``gate * P(i | repeat) + (1 - gate) * P(i | explore)`` (``explore``: the
    :func:`explore_candidates` triplets)."""
    behavior = data.sample_behavior
    bias, slope = np.asarray(mixture.gate_bias, float)[behavior], np.asarray(mixture.gate_slope, float)[behavior]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logit = bias + slope * np.log(np.maximum(total, 1e-300))
        if gate_offset is not None:
            logit = logit + gate_offset
        gate = np.where(np.isposinf(bias), 1.0, 1.0 / (1.0 + np.exp(-logit)))
    gate = np.where(total > 0, gate, 0.0)  # no history item: nothing to repeat
    e_sample, e_item, e_score = explore
    tau = np.asarray(mixture.temperature, float)[behavior][e_sample]
    if not normalize_explore:
        p_exp = np.exp(e_score / tau)
    else:
        p_exp = softmax_per_sample(e_sample, e_score / tau, data.n_samples) if len(e_sample) else e_score
    has_explore = np.bincount(e_sample, minlength=data.n_samples) > 0
    gate = np.where(has_explore, gate, np.where(total > 0, 1.0, gate))
    # an exact gate of 1 still ranks explore items after the history (a vanishing weight, not zero)
    explore_weight = np.maximum(1.0 - gate, 1e-12)
    sample = np.concatenate([features.sample, e_sample])
    item = np.concatenate([features.item, e_item])
    score = np.concatenate([gate[features.sample] * p_rep, explore_weight[e_sample] * p_exp])
    tiebreak = np.concatenate([features.last_time, np.full(len(e_sample), np.iinfo(np.int64).min)])
    return Ranking(*top_items(sample, item, score, tiebreak, data.n_samples, k))


def fit_mixture(valid: EvalSet, base: Ranking, scorer: RepeatScorer, n_behaviors: int, *, gates, gate_slopes,
                temperatures, k: int = 10, normalize_explore: bool = True,
                ranker: RepeatRanker | None = None, inputs: RepeatInputs | None = None,
                samples: np.ndarray | None = None, pooling: SuccessorPooling | None = None,
                successors: Successors | None = None, cooccurrence: CooccurrencePooling | None = None,
                neighbors: Neighbors | None = None) -> Mixture:
    """Choose, per requested behavior, the gate (``P(repeat)`` at unit repeat evidence), its slope and the
    explore temperature on the validation set, by NDCG@k of that behavior's samples (only ``samples``, a bool
    mask, choose if given: held-out comparisons; ``normalize_explore``: as :func:`mixture_ranking`;
    ``pooling`` / ``successors``, ``cooccurrence`` / ``neighbors``: the explore side's experts,
    :func:`explore_side`)."""
    inputs = inputs or RepeatInputs(valid, n_behaviors)
    features = inputs.features(scorer.day_decay, scorer.session_decay)
    logits = [np.inf if g >= 1 else float(np.log(g / (1 - g))) for g in gates]
    best = {b: (-1.0, np.inf, 0.0, 1.0) for b in range(n_behaviors)}
    # the history distribution and the explore candidates do not depend on the grid: computed once
    p_rep, total = history_distribution(valid, inputs, features, scorer, ranker, None)
    explore = explore_side(valid, base, pooling, successors, cooccurrence, neighbors)
    fields = dict(successors=pooling, cooccurrence=cooccurrence)
    chooses = np.ones(valid.n_samples, bool) if samples is None else samples
    for bias, slope, tau in itertools.product(logits, gate_slopes, temperatures):
        if np.isinf(bias) and (slope != gate_slopes[0] or tau != temperatures[0]):
            continue  # always-repeat-first: slope and temperature do not matter
        mixture = Mixture(scorer, [bias] * n_behaviors, [slope] * n_behaviors, [tau] * n_behaviors, ranker=ranker,
                          **fields)
        ndcg = _ndcg(_combine(valid, mixture, features, p_rep, total, explore, k,
                              normalize_explore=normalize_explore).items, valid.targets, k)
        for b in range(n_behaviors):
            rows = (valid.sample_behavior == b) & chooses
            if rows.any() and ndcg[rows].mean() > best[b][0] + 1e-12:
                best[b] = (float(ndcg[rows].mean()), bias, slope, tau)
    mixture = Mixture(scorer, [best[b][1] for b in range(n_behaviors)], [best[b][2] for b in range(n_behaviors)],
                      [best[b][3] for b in range(n_behaviors)], ranker=ranker, **fields)
    final = mixture_ranking(valid, inputs, base, mixture, k, features, successors=successors, neighbors=neighbors,
                            normalize_explore=normalize_explore)
    fitted = _ndcg(final.items, valid.targets, k).mean()
    plain = _ndcg(base.items[:, :k], valid.targets, k).mean()
    mixture.validation = {f"ndcg@{k}": float(fitted), f"base_ndcg@{k}": float(plain), "n_samples": valid.n_samples}
    return mixture


def fit_repeat_explore(valid: EvalSet, base: Ranking, n_behaviors: int, n_items: int, grid, k: int = 10,
                       item_prior: np.ndarray | None = None, successors: Successors | None = None,
                       neighbors: Neighbors | None = None) -> Mixture:
    """Every step on the validation set: the repeat scorer (without neighbors: the base model explores), the
    learned ranker where it is better (with ``item_prior``: :func:`item_log_share`), the successors' weight
    on the explore side (with ``successors``: ``successors.successor_table``), the co-occurrence expert's (with
    ``neighbors``: ``successors.cooccurrence_table``; kept only where it raises the fitted mixture's NDCG@k), then
    the gate and temperature over ``base`` (``grid``: the ``repeat`` parameters)."""
    inputs = RepeatInputs(valid, n_behaviors)  # one set of (sample, past event) pairs for all three fits
    scorer, _ = fit_repeat_scorer(valid, n_behaviors, n_items, day_decays=grid.day_decays,
                                  session_decays=grid.session_decays, weights=grid.behavior_weights, neighbors=0,
                                  neighbor_weights=[0.0], k=k, inputs=inputs)
    ranker = choose_repeat_ranker(valid, n_behaviors, scorer, grid, k, inputs=inputs, item_prior=item_prior)
    pooling = None
    if successors is not None and any(w > 0 for w in grid.successor_weights):
        pooling = fit_successors(valid, base, successors, grid.successor_weights, grid.successor_windows,
                                 grid.successor_decay, n_behaviors, k, width=grid.successors)
    cooccurrence = None
    if neighbors is not None and any(w > 0 for w in grid.cooccurrence_weights):
        cooccurrence = fit_cooccurrence(valid, base, pooling, successors, neighbors, grid, n_behaviors, k)
    fit = partial(fit_mixture, valid, base, scorer, n_behaviors, gates=grid.gates, gate_slopes=grid.gate_slopes,
                  temperatures=grid.temperatures, k=k, ranker=ranker, inputs=inputs, pooling=pooling,
                  successors=successors)
    mixture = fit()
    if cooccurrence is not None:  # chosen on the explore side alone: kept only where the whole mixture gains
        pooled = fit(cooccurrence=cooccurrence, neighbors=neighbors)
        if pooled.validation[f"ndcg@{k}"] > mixture.validation[f"ndcg@{k}"] + 1e-12:
            mixture = pooled
    return mixture
