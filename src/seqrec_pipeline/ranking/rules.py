"""Rule baselines on the evaluation samples: recent-history repeat, popularity, item transitions, and the
personal recency-and-frequency rule ``tifu`` (``repeat.py``; its parameters are fitted on the validation set).

Their statistics come from the training events of ``splits.training_prefix(..., users="all")``: the
protocol users' events before validation plus every event of the users outside the protocol.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.splits import EvalSet, training_prefix

from .core import Ranking, top_k_of_scores
from .repeat import RepeatInputs, RepeatScorer, tifu_ranking

RULES = ("recent", "popularity", "transitions", "tifu")


def recent_items(data: EvalSet, n_items: int, top_k: int) -> np.ndarray:
    """Per user, the most recent distinct items of its history window, newest first: ``[n_users, top_k]``."""
    lengths = data.history_lengths
    user = np.repeat(np.arange(data.n_users), lengths)
    newest_first = np.lexsort((-np.arange(len(user)), user))
    key = user[newest_first] * np.int64(n_items) + data.history_item[newest_first]
    _, first = np.unique(key, return_index=True)
    kept = newest_first[np.sort(first)]  # first (= newest) occurrence of each (user, item), still newest first
    kept_user = user[kept]
    rank = np.arange(len(kept)) - np.searchsorted(kept_user, kept_user)
    out = np.full((data.n_users, top_k), -1, dtype=np.int64)
    inside = rank < top_k
    out[kept_user[inside], rank[inside]] = data.history_item[kept[inside]]
    return out


def rank_rule(rule: str, sequences: pl.DataFrame, data: EvalSet, n_items: int, protocol: str, top_k: int,
              scorer: RepeatScorer | None = None) -> Ranking:
    """The ``rule``'s top ``top_k`` items for every sample of ``data``; ``tifu`` needs its fitted ``scorer``
    (``ranking.repeat.fit_repeat_scorer`` on the validation set)."""
    if rule not in RULES:
        raise InputError(f"unknown rule model '{rule}'; choose one of {list(RULES)}")
    if rule == "recent":  # the reference rule
        return Ranking(recent_items(data, n_items, top_k)[data.sample_user])
    if rule == "tifu":
        n_behaviors = len(scorer.behavior_weights)
        return tifu_ranking(data, RepeatInputs(data, n_behaviors), scorer, n_items, top_k)
    train = training_prefix(sequences, protocol, users="all")
    n_behaviors = int(sequences["behavior"].explode().max()) + 1
    popularity = np.zeros((n_behaviors, n_items), np.float64)
    np.add.at(popularity, (train.behavior.astype(np.int64), train.item.astype(np.int64)), 1.0)
    overall = popularity.sum(0)
    if rule == "popularity":  # most popular items of the sample's behavior (ties: overall popularity)
        return Ranking(top_k_of_scores(popularity[data.sample_behavior] + overall[None, :] * 1e-9, top_k))
    # transitions: next-item counts from consecutive training events, from the last history item
    same_user = np.repeat(np.arange(train.n_sequences), train.lengths)
    follows = np.flatnonzero(same_user[1:] == same_user[:-1])
    counts = scipy.sparse.csr_matrix(
        (np.ones(len(follows)), (train.item[follows].astype(np.int64), train.item[follows + 1].astype(np.int64))),
        shape=(n_items, n_items),
    )
    ends = data.history_offsets[1:]
    last = np.where(data.history_lengths > 0, data.history_item[np.maximum(ends - 1, 0)], -1)
    src = last[data.sample_user]
    scores = overall[None, :].repeat(len(src), 0) * 1e-9
    has_last = src >= 0
    scores[has_last] += counts[src[has_last]].toarray()
    return Ranking(top_k_of_scores(scores, top_k))
