"""The ranked structure every ranker returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def top_k_of_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first; positions scoring <= 0 become -1."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, 1).argsort(axis=1, kind="stable")[:, ::-1]
    top = np.take_along_axis(part, order, 1)
    return np.where(np.take_along_axis(scores, top, 1) > 0, top, -1)
