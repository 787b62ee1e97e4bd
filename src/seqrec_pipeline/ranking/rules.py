"""Rule baselines on the evaluation samples: recent-history repeat, popularity, item transitions, the
personal recency-and-frequency rule ``tifu`` (``repeat.py``; its parameters are fitted on the validation set) and
``item_knn``: the items that co-occur with the user's last items (PPMI of the training events, as the
collaborative item vectors before their SVD) as the explorer of the repeat / explore mixture, fitted on the
validation set like any model's.

Their statistics come from the training events of ``splits.training_prefix(..., users="all")``: the
protocol users' events before validation plus every event of the users outside the protocol.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse

from seqrec_pipeline.data.embeddings import ppmi_matrix
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import RULE_MODELS as RULES
from seqrec_pipeline.splits import EvalSet, EventBuffer, events_before, training_prefix

from .core import Ranking, top_k_of_scores
from .repeat import (Mixture, RepeatInputs, RepeatScorer, explore_pooling, fit_repeat_explore, fit_repeat_scorer,
                     item_log_share, mixture_ranking, repeat_side, tifu_ranking)
from .successors import successor_table, top_per_row

log = logging.getLogger(__name__)


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
    if rule == "item_knn":
        raise InputError("the item_knn rule is fitted on the validation session: use rule_ranking")
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
        return Ranking(top_k_of_scores(popularity + overall[None, :] * 1e-9, top_k)[data.sample_behavior])
    # transitions: next-item counts from consecutive training events, from the last history item (ties and
    # the rest of the list: overall popularity); sparse, so memory follows the transitions, not samples x catalog
    before, after = train.consecutive_pairs()
    counts = scipy.sparse.csr_matrix((np.ones(len(before)), (before, after)), shape=(n_items, n_items))
    counts.data += overall[counts.indices] * 1e-9
    popular = np.argsort(-overall, kind="stable")[:top_k]
    popular = popular[overall[popular] > 0]
    src = data.last_history_item[data.sample_user]
    n = len(src)
    rows = scipy.sparse.diags((src >= 0).astype(np.float64)) @ counts[np.maximum(src, 0)]
    fill = scipy.sparse.csr_matrix((np.tile(overall[popular] * 1e-9, n), (np.repeat(np.arange(n), len(popular)),
                                                                           np.tile(popular, n))), shape=(n, n_items))
    found = (rows + (fill - fill.multiply(rows > 0))).tocsr()  # a popular follower keeps its count
    found.eliminate_zeros()
    return Ranking(_sparse_top_k(found, top_k).items)


def _sparse_top_k(scores: scipy.sparse.csr_matrix, k: int) -> Ranking:
    """Each row's ``k`` largest stored entries, best first (-1 / -inf where a row has fewer)."""
    n_rows = scores.shape[0]
    row = np.repeat(np.arange(n_rows), np.diff(scores.indptr))
    order = np.lexsort((-scores.data, row))
    rank = np.arange(len(order)) - scores.indptr[row[order]]
    keep = rank < k
    items = np.full((n_rows, k), -1, np.int64)
    values = np.full((n_rows, k), -np.inf)
    items[row[order][keep], rank[keep]] = scores.indices[order][keep]
    values[row[order][keep], rank[keep]] = scores.data[order][keep]
    return Ranking(items, values)


ITEM_KNN_BLOCK = 8192  # samples scored at a time, at most ...
ITEM_KNN_BLOCK_ENTRIES = 16_000_000  # ... and at most about this many co-occurrence entries summed per block: on a
# log whose popular items co-occur with most of the catalog a block of samples would otherwise hold billions


@dataclass
class ItemKnn:
    """``item_knn``'s explorer: for a query, the ``width`` items outside the user's past with the highest
    ``sum_j decay ** (back_j - 1) * PPMI(j, i)`` over the user's ``last`` newest history items j (PPMI of items
    within ``window`` events of each other, the embed stage's matrix; each item's ``neighbors`` highest, 0: all),
    then the most popular items, below every co-occurring one.  Fitted on a set of events by :meth:`fit`; stored
    as plain files by :meth:`save` (the served rule's "model")."""

    ppmi: scipy.sparse.csr_matrix  # float32 [n_items, n_items]
    popular: np.ndarray  # int64 [<= width], most popular first
    popular_score: np.ndarray  # float64, tiny positive scores below any PPMI sum
    window: int
    width: int
    last: int
    decay: float
    neighbors: int = 0

    @classmethod
    def fit(cls, events: EventBuffer, n_items: int, *, window: int, chunk_events: int, width: int, last: int,
            decay: float, neighbors: int = 0) -> ItemKnn:
        users = np.repeat(np.arange(events.n_sequences, dtype=np.int32), events.lengths)
        ppmi = ppmi_matrix(users, events.item.astype(np.int32), n_items, window, chunk_events, np.float32).tocsr()
        if neighbors:
            row, keep = top_per_row(ppmi, neighbors)
            ppmi = scipy.sparse.csr_matrix((ppmi.data[keep], (row, ppmi.indices[keep])), shape=ppmi.shape)
        popularity = np.bincount(events.item, minlength=n_items).astype(np.float64)
        popular = np.argsort(-popularity, kind="stable")[:width]
        popular_score = 1e-9 * popularity[popular] / max(popularity.max(), 1.0)  # PPMI values are positive
        return cls(ppmi, popular.astype(np.int64), popular_score, window, width, last, decay, neighbors)

    def rank(self, data: EvalSet, block: int = ITEM_KNN_BLOCK, entries: int = ITEM_KNN_BLOCK_ENTRIES) -> Ranking:
        """The explore candidates of every sample of ``data``, at most ``block`` samples and about ``entries``
        co-occurrences (one sample's rows at least) at a time; sparse throughout, the same lists whatever the
        blocks."""
        n_items = self.ppmi.shape[0]
        offsets, rows, cols, weights = data.history_offsets, [], [], []
        for back in range(1, self.last + 1):
            at = offsets[1:] - back
            ok = at >= offsets[:-1]
            rows.append(np.flatnonzero(ok))
            cols.append(data.history_item[at[ok]])
            weights.append(np.full(int(ok.sum()), self.decay ** (back - 1)))
        query = scipy.sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                                        shape=(data.n_users, n_items))[data.sample_user]
        items = np.full((data.n_samples, self.width), -1, np.int64)
        scores = np.full((data.n_samples, self.width), -np.inf)
        popular = self.popular
        # a sample's cost: the co-occurrences its history items' rows hold, its past and the popular fill
        row_entries = np.diff(self.ppmi.indptr).astype(np.int64)
        cost = (np.bincount(np.repeat(np.arange(data.n_samples), np.diff(query.indptr)),
                            weights=row_entries[query.indices], minlength=data.n_samples)
                + np.diff(data.past_offsets)[data.sample_user] + len(popular))
        spent = np.concatenate([[0.0], np.cumsum(cost)])
        lo = 0
        while lo < data.n_samples:
            hi = int(np.searchsorted(spent, spent[lo] + entries, side="right")) - 1
            hi = min(max(hi, lo + 1), lo + block, data.n_samples)
            n = hi - lo
            found = (query[lo:hi] @ self.ppmi).tocsr()
            found = found + scipy.sparse.csr_matrix(
                (np.tile(self.popular_score, n), (np.repeat(np.arange(n), len(popular)), np.tile(popular, n))),
                shape=(n, n_items))
            # the user's past is never an explore candidate: those entries are dropped before the top-k
            sample_user = data.sample_user[lo:hi]
            past_len = data.past_offsets[sample_user + 1] - data.past_offsets[sample_user]
            at = np.repeat(data.past_offsets[sample_user] - np.cumsum(past_len) + past_len, past_len) + np.arange(
                past_len.sum())
            past = scipy.sparse.csr_matrix((np.ones(len(at), np.float32), (np.repeat(np.arange(n), past_len),
                                                                            data.past_item[at])), shape=(n, n_items))
            found = (found - found.multiply(past > 0)).tocsr()
            found.eliminate_zeros()
            ranked = _sparse_top_k(found, self.width)
            items[lo:hi], scores[lo:hi] = ranked.items, ranked.scores
            lo = hi
        return Ranking(items, scores)

    def save(self, folder: str | Path) -> None:
        """``ppmi.parquet`` (source, item, ppmi) and ``config.json`` into the existing folder ``folder``."""
        folder = Path(folder)
        coo = self.ppmi.tocoo()
        pl.DataFrame({"source": coo.row.astype(np.int32), "item": coo.col.astype(np.int32),
                      "ppmi": coo.data.astype(np.float32)}).write_parquet(folder / "ppmi.parquet")
        config = {"rule": "item_knn", "n_items": int(self.ppmi.shape[0]), "window": self.window, "width": self.width,
                  "last": self.last, "decay": self.decay, "neighbors": self.neighbors, "popular": self.popular.tolist(),
                  "popular_score": self.popular_score.tolist()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> ItemKnn:
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        frame = pl.read_parquet(folder / "ppmi.parquet")
        n = config["n_items"]
        ppmi = scipy.sparse.csr_matrix((frame["ppmi"].to_numpy(), (frame["source"].to_numpy(),
                                                                   frame["item"].to_numpy())), shape=(n, n))
        return cls(ppmi, np.asarray(config["popular"], np.int64), np.asarray(config["popular_score"], np.float64),
                   config["window"], config["width"], config["last"], config["decay"], config.get("neighbors", 0))

    @property
    def settings(self) -> dict:
        """What :meth:`fit` was given besides the events: ``ItemKnn.fit(events, n_items, **settings,
        chunk_events=...)`` refits it on other events."""
        return {"window": self.window, "width": self.width, "last": self.last, "decay": self.decay,
                "neighbors": self.neighbors}

    @staticmethod
    def is_stored_in(folder: str | Path) -> bool:
        return (Path(folder) / "ppmi.parquet").is_file()


def fit_item_knn(events: EventBuffer, n_items: int, grid, *, window: int, chunk_events: int) -> ItemKnn:
    """:class:`ItemKnn` of ``events`` with the ``repeat`` parameters ``grid`` (its candidates, newest items read
    and their decay, neighbors per item)."""
    return ItemKnn.fit(events, n_items, window=window, chunk_events=chunk_events, width=grid.candidates,
                       last=grid.cooccurrence_items, decay=grid.cooccurrence_decay, neighbors=grid.knn_neighbors)


def item_knn_ranking(sequences: pl.DataFrame, valid: EvalSet, test: EvalSet, n_items: int, n_behaviors: int,
                     protocol: str, grid, *, window: int, chunk_events: int,
                     k: int) -> tuple[Ranking, Mixture, ItemKnn]:
    """The ``item_knn`` rule: the repeat / explore mixture (``grid``: the ``repeat`` parameters) over
    :class:`ItemKnn` of the training events, every parameter fitted on ``valid``; the test ranking, the fitted
    mixture and the explorer."""
    train = training_prefix(sequences, protocol, users="all")
    knn = fit_item_knn(train, n_items, grid, window=window, chunk_events=chunk_events)
    base_valid, base_test = knn.rank(valid), knn.rank(test)
    mixture = fit_repeat_explore(valid, base_valid, n_behaviors, n_items, grid, k,
                                 item_prior=item_log_share(train.item, n_items),
                                 successors=successor_table(train, grid.successors))
    successors = successor_table(events_before(sequences, protocol, "test"), grid.successors)
    ranking = mixture_ranking(test, RepeatInputs(test, n_behaviors), base_test, mixture, k, successors=successors)
    return ranking, mixture, knn


def rule_ranking(rule: str, sequences: pl.DataFrame, valid: EvalSet, test: EvalSet, n_items: int, n_behaviors: int,
                 protocol: str, grid, *, window: int, chunk_events: int, k: int) -> tuple[Ranking, dict]:
    """Any rule's top ``k`` items for the samples of ``test`` and what it fitted on ``valid`` (empty for the
    rules without parameters; ``item_knn``: its mixture's ``to_dict()`` and the explorer's settings under
    ``"explorer"``, what serving it needs besides the log).  ``grid``: the ``repeat`` parameters (tifu,
    item_knn); ``window`` / ``chunk_events``: the embed stage's co-occurrence window and chunk size (item_knn)."""
    if rule == "item_knn":  # co-occurring items explore, inside the mixture fitted on the validation session
        ranking, mixture, knn = item_knn_ranking(sequences, valid, test, n_items, n_behaviors, protocol, grid,
                                                 window=window, chunk_events=chunk_events, k=k)
        log.info("item_knn fitted on the validation session: NDCG@%d %.4f (history items: %s; explore: %s)", k,
                 mixture.validation[f"ndcg@{k}"], repeat_side(mixture), explore_pooling(mixture))
        return ranking, mixture.to_dict() | {"explorer": knn.settings}
    if rule == "tifu":
        scorer, value = fit_repeat_scorer(valid, n_behaviors, n_items, day_decays=grid.day_decays,
                                          session_decays=grid.session_decays, weights=grid.behavior_weights,
                                          neighbors=grid.neighbors, neighbor_weights=grid.neighbor_weights, k=k)
        log.info("tifu fitted on the validation session (NDCG@%d %.4f): %s", k, value, scorer.to_dict())
        fitted = scorer.to_dict() | {f"valid_ndcg@{k}": value}
        return rank_rule(rule, sequences, test, n_items, protocol, k, scorer), fitted
    return rank_rule(rule, sequences, test, n_items, protocol, k), {}
