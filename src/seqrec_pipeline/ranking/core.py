"""The ranked structure every ranker returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrec_pipeline.splits import EvalSet


@dataclass
class Ranking:
    """Ranked items per sample of an evaluation set, best first.

    ``items``: int64 ``[n_samples, K]`` item indices, -1 = empty slot; ``scores``: float32 ``[n_samples, K]``
    (higher is better, -inf on empty slots) or None for rankers without a meaningful score.
    """

    items: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int64)
        if self.items.ndim != 2:
            raise ValueError(f"ranked items must be [n_samples, K], got shape {self.items.shape}")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32)
            if self.scores.shape != self.items.shape:
                raise ValueError(f"scores {self.scores.shape} do not match items {self.items.shape}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def k(self) -> int:
        return self.items.shape[1]


def _peak_per_sample(sample: np.ndarray, values: np.ndarray, n_samples: int) -> np.ndarray:
    peak = np.full(n_samples, -np.inf)
    np.maximum.at(peak, sample, values)
    return peak


def softmax_per_sample(sample: np.ndarray, values: np.ndarray, n_samples: int) -> np.ndarray:
    """Softmax of ``values`` within each sample of (sample, value) pairs."""
    exp = np.exp(values - _peak_per_sample(sample, values, n_samples)[sample])
    return exp / np.bincount(sample, weights=exp, minlength=n_samples)[sample]


def log_softmax_per_sample(sample: np.ndarray, values: np.ndarray, n_samples: int) -> np.ndarray:
    """Log-softmax of ``values`` within each sample of (sample, value) pairs."""
    shifted = values - _peak_per_sample(sample, values, n_samples)[sample]
    return shifted - np.log(np.bincount(sample, weights=np.exp(shifted), minlength=n_samples)[sample])


def top_k_of_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first; positions scoring <= 0 become -1."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, 1).argsort(axis=1, kind="stable")[:, ::-1]
    top = np.take_along_axis(part, order, 1)
    return np.where(np.take_along_axis(scores, top, 1) > 0, top, -1)


def explore_list(data: EvalSet, ranking: Ranking, k: int) -> np.ndarray:
    """The top ``k`` of each ranked list once the user's history items are taken out (what a model adds to the
    repeat / explore mixture)."""
    keep = (ranking.items >= 0) & ~data.in_past(ranking.items)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept items first, in rank order
    items = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ranking.items, order, 1), -1)
    return items[:, :k]


def selection_scores(data: EvalSet, ranking: Ranking, k: int, explore: bool) -> dict[str, float]:
    """Model-selection metrics on a validation set: NDCG@k / HR@k of the ranked lists, or with ``explore`` of
    the lists without history items against the explore targets (samples without one are left out)."""
    from .metrics import metrics_by_behavior

    items, targets, rows = ranking.items[:, :k], data.targets, np.arange(data.n_samples)
    if explore:
        items = explore_list(data, ranking, k)
        targets = [[t for t, r in zip(ts, rs) if not r] for ts, rs in zip(data.targets, data.repeat)]
        rows = np.array([i for i, t in enumerate(targets) if t], dtype=np.int64)
        targets = [targets[i] for i in rows]
    if len(rows) == 0:
        return {f"ndcg@{k}": 0.0, f"hit@{k}": 0.0}
    merged = metrics_by_behavior(items[rows], targets, data.sample_behavior[rows], ks=(k,))["merged"]
    return {f"ndcg@{k}": merged[f"ndcg@{k}"], f"hit@{k}": merged[f"hit@{k}"]}
