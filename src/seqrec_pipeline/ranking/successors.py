"""The recent items' successors: a first-order transitions expert on the explore side of the repeat / explore
mixture (``repeat.py``).

``P_trans(i | j) = c(j -> i) / n(j)``: the share of the training events directly after an event of item j (same
user) that were item i, kept for the ``width`` most frequent successors of each j (the ``transitions`` rule's
counts).  A query reads the successors of its user's ``window`` newest history items, the n-th newest weighted
``decay ** (n - 1)`` (normalized over the items the history has):
``P_trans(i | q) = sum_n a_n P_trans(i | n-th newest item)`` (``window = 1``: the last item alone).  With weight
``w_b`` per requested behavior b the mixture's explore side becomes the product of experts

    log P_explore(i | q) = (1 - w_b) * log P_model(i | q) + w_b * log P_trans(i | q) + const

over the union of both experts' candidates outside the user's history (``w_b = 0``: the model alone, exactly the
mixture without this expert).  A candidate one expert did not return scores ``MISSING_MARGIN`` below that expert's
weakest candidate for the sample: a beam search or a successor list returns its most likely items, so anything
left out is less likely than all of them.  A sample whose recent items have no successor gets the model alone.

A product of experts rather than a second mixture component because the two experts agree on what matters for a
next item: the model knows the user, the counts know which item usually comes right after these; an item both
rank high is the best guess (measured on the validation sessions; docs/design.md).  ``w_b`` per behavior and the
window per head are chosen on the validation session (``repeat.fit_successors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse

from seqrec_pipeline.data.embeddings import ppmi_matrix
from seqrec_pipeline.splits import EvalSet, EventBuffer

from .core import log_softmax_per_sample

MISSING_MARGIN = 1.0  # nats below an expert's weakest candidate for a candidate that expert did not return


class _ItemTable:
    """Per source item (sorted), its kept items and one value each, best first; a parquet frame of three columns."""

    VALUE: ClassVar[str]  # the value column's name

    @cached_property
    def width(self) -> int:
        """The most items any source keeps."""
        starts = np.flatnonzero(np.r_[True, self.source[1:] != self.source[:-1], True])
        return int(np.diff(starts).max()) if len(self.source) else 0

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"source": self.source, "item": self.item, self.VALUE: getattr(self, self.VALUE)})

    @classmethod
    def from_frame(cls, frame: pl.DataFrame):
        frame = frame.sort("source", cls.VALUE, "item", descending=[False, True, False])
        return cls(frame["source"].to_numpy().astype(np.int64), frame["item"].to_numpy().astype(np.int64),
                   frame[cls.VALUE].to_numpy().astype(np.float64))


@dataclass
class Successors(_ItemTable):
    """Per source item (sorted), its most frequent successors and their log-probabilities."""

    VALUE: ClassVar[str] = "log_prob"
    source: np.ndarray  # int64 [E], non-decreasing
    item: np.ndarray  # int64 [E]
    log_prob: np.ndarray  # float64 [E]


@dataclass(frozen=True)
class SuccessorPooling:
    """How a mixture's explore side pools the successors expert: the weight per requested behavior, the newest
    history items read and the decay of their shares, and the successors kept per item in the table it was fitted
    with."""

    weight: list[float]
    window: int = 1
    decay: float = 1.0
    width: int = 0

    @property
    def active(self) -> bool:
        """Whether any behavior pools the successors."""
        return any(w > 0 for w in self.weight)


@dataclass
class Neighbors(_ItemTable):
    """Per source item (sorted), the items of highest PPMI with it and that PPMI (the co-occurrence expert)."""

    VALUE: ClassVar[str] = "ppmi"
    source: np.ndarray  # int64 [E], non-decreasing
    item: np.ndarray  # int64 [E]
    ppmi: np.ndarray  # float64 [E], > 0
    window: int = 0  # the co-occurrence window the table was counted with (0: not known, e.g. read from a file)


@dataclass(frozen=True)
class CooccurrencePooling:
    """How a mixture's explore side pools the co-occurrence expert: the weight per requested behavior, the scale
    of the summed PPMI, the newest history items read and the decay of their shares, and the table it was
    fitted with (neighbors kept per item, co-occurrence window in events)."""

    weight: list[float]
    scale: float = 1.0
    items: int = 3
    decay: float = 0.7
    width: int = 0
    window: int = 3

    @property
    def active(self) -> bool:
        return any(w > 0 for w in self.weight)


def _rows_of_newest(data: EvalSet, source: np.ndarray, width: int, back: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the table positions ``[n_samples, width]`` of its ``back``-th newest history item's entries
    (0 = the newest) and which of them exist."""
    ends, lengths = data.history_offsets[1:], data.history_lengths
    newest = np.where(lengths > back, data.history_item[np.maximum(ends - 1 - back, 0)], -1)[data.sample_user]
    lo = np.searchsorted(source, newest, side="left")
    count = np.where(newest >= 0, np.searchsorted(source, newest, side="right"), lo) - lo
    slot = np.arange(width)
    return np.minimum(lo[:, None] + slot, len(source) - 1), slot < count[:, None]


def successor_table(train: EventBuffer, width: int) -> Successors:
    """The ``width`` most frequent successors of every item in ``train`` (``splits.training_prefix``'s events;
    consecutive events of one user), ties by item index."""
    src, dst = train.consecutive_pairs()
    span = np.int64(max(int(dst.max(initial=0)), int(src.max(initial=0))) + 1)
    pairs, counts = np.unique(src * span + dst, return_counts=True)
    source, item = pairs // span, pairs % span
    out_of = np.bincount(source, weights=counts)  # every transition out of the source, kept or not
    order = np.lexsort((item, -counts, source))
    source, item, counts = source[order], item[order], counts[order]
    rank = np.arange(len(source)) - np.searchsorted(source, source)
    keep = rank < width
    return Successors(source[keep], item[keep], np.log(counts[keep] / out_of[source[keep]]))


def successor_candidates(data: EvalSet, table: Successors, window: int = 1,
                         decay: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample, item, log P_trans) of the successors of each sample's ``window`` newest history items (module
    docstring) that are outside the user's past; at most the table's width per sample, the most likely first."""
    if not len(table.source):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    width, lengths = table.width, data.history_lengths
    share = np.where(lengths[:, None] > np.arange(window), float(decay) ** np.arange(window), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_share = np.log(share / share.sum(1, keepdims=True))
    items, log_prob = [], []
    for back in range(window):  # a handful of recent items, each step vectorized over the samples
        at, found = _rows_of_newest(data, table.source, width, back)
        items.append(np.where(found, table.item[at], -1))
        log_prob.append(table.log_prob[at] + log_share[data.sample_user, back][:, None])
    items, log_prob = np.concatenate(items, 1), np.concatenate(log_prob, 1)
    keep = (items >= 0) & ~data.in_past(items)
    sample = np.broadcast_to(np.arange(data.n_samples)[:, None], items.shape)
    sample, items, log_prob = sample[keep], items[keep], log_prob[keep]
    if window == 1:  # nothing to add up: the table's own log-probabilities, without an exp / log round trip
        return sample, items, log_prob
    # an item that follows several recent items adds up its shares; keep the width most likely per sample
    span = np.int64(items.max(initial=0) + 1)
    keys, inverse = np.unique(sample * span + items, return_inverse=True)
    prob = np.bincount(inverse, weights=np.exp(log_prob))
    sample, items = keys // span, keys % span
    order = np.lexsort((items, -prob, sample))
    sample, items, prob = sample[order], items[order], prob[order]
    top = np.arange(len(sample)) - np.searchsorted(sample, sample) < width
    return sample[top], items[top], np.log(prob[top])


def cooccurrence_table(events: EventBuffer, width: int, *, window: int, chunk_events: int) -> Neighbors:
    """The ``width`` items of highest PPMI with every item of ``events`` (items within ``window`` events of each
    other, the embed stage's matrix; ``chunk_events``: its chunking), ties by item index."""
    users = np.repeat(np.arange(events.n_sequences, dtype=np.int32), events.lengths)
    n_items = int(events.item.max(initial=-1)) + 1
    ppmi = ppmi_matrix(users, events.item.astype(np.int32), n_items, window, chunk_events, np.float32).tocsr()
    row, keep = top_per_row(ppmi, width)
    return Neighbors(row, ppmi.indices[keep].astype(np.int64), ppmi.data[keep].astype(np.float64), window)


def top_per_row(matrix: scipy.sparse.csr_matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``width`` largest stored entries of every row of ``matrix`` (ties by column): their rows (sorted) and
    their positions in ``matrix.data`` / ``matrix.indices``, largest first within a row."""
    row = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, row))
    rank = np.arange(len(order)) - np.searchsorted(row[order], row[order])
    keep = order[rank < width]
    return row[keep], keep


def cooccurrence_candidates(data: EvalSet, table: Neighbors, pooling: CooccurrencePooling
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample, item, log P_cooc) of the co-occurrence expert: ``s(i) = sum_n decay ** (n - 1) * PPMI(j_n, i)``
    over the sample's ``pooling.items`` newest history items j_n and their table neighbors outside the user's
    past (as the ``item_knn`` rule scores them), ``log P_cooc = log_softmax(scale * s)`` over those items."""
    if not len(table.source):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    items, scores = [], []
    for back in range(pooling.items):
        at, found = _rows_of_newest(data, table.source, table.width, back)
        items.append(np.where(found, table.item[at], -1))
        scores.append(float(pooling.decay) ** back * table.ppmi[at])
    items, scores = np.concatenate(items, 1), np.concatenate(scores, 1)
    keep = (items >= 0) & ~data.in_past(items)
    sample = np.broadcast_to(np.arange(data.n_samples)[:, None], items.shape)[keep]
    items, scores = items[keep], scores[keep]
    span = np.int64(items.max(initial=0) + 1)
    keys, inverse = np.unique(sample * span + items, return_inverse=True)
    total = np.bincount(inverse, weights=scores)
    sample = keys // span
    return sample, keys % span, log_softmax_per_sample(sample, float(pooling.scale) * total, data.n_samples)


def _per_sample_min(sample: np.ndarray, values: np.ndarray, n_samples: int) -> np.ndarray:
    low = np.full(n_samples, np.inf)
    np.minimum.at(low, sample, values)
    return low


def product_of_experts(model: tuple[np.ndarray, np.ndarray, np.ndarray],
                       successors: tuple[np.ndarray, np.ndarray, np.ndarray], weight: np.ndarray,
                       n_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The explore side's (sample, item, score) triplets: the model's triplets (``repeat.explore_candidates``)
    and the successors' (:func:`successor_candidates`) pooled with ``weight`` per sample on the successors (module
    docstring); samples with weight 0 keep the model's candidates and scores unchanged."""
    m_sample, m_item, m_score = model
    t_sample, t_item, t_logp = successors
    used = weight[t_sample] > 0
    t_sample, t_item, t_logp = t_sample[used], t_item[used], t_logp[used]
    if not len(t_sample):
        return model
    m_logp = log_softmax_per_sample(m_sample, m_score, n_samples)
    span = np.int64(max(int(m_item.max(initial=0)), int(t_item.max(initial=0))) + 1)
    keys, inverse = np.unique(np.concatenate([m_sample * span + m_item, t_sample * span + t_item]),
                              return_inverse=True)
    sample, item = keys // span, keys % span
    n_model = len(m_sample)
    model_part = np.full(len(keys), np.nan)
    model_part[inverse[:n_model]] = m_logp
    trans_part = np.full(len(keys), np.nan)
    trans_part[inverse[n_model:]] = t_logp
    model_floor = _per_sample_min(m_sample, m_logp, n_samples) - MISSING_MARGIN
    trans_floor = _per_sample_min(t_sample, t_logp, n_samples) - MISSING_MARGIN
    # samples the successors do not reach (weight 0, no successor) keep exactly the model's scores
    untouched = ~np.isfinite(trans_floor) | (weight <= 0)
    # a sample without model candidates ranks by the successors alone (the model's part is the same for all)
    model_part = np.where(np.isnan(model_part), np.where(np.isfinite(model_floor), model_floor, 0.0)[sample],
                          model_part)
    trans_part = np.where(np.isnan(trans_part), np.where(untouched, 0.0, trans_floor)[sample], trans_part)
    w = weight[sample]
    pooled = (1.0 - w) * model_part + w * trans_part
    score = np.where(untouched[sample], np.nan, pooled)
    plain = untouched[m_sample]
    keep = ~untouched[sample]
    return (np.concatenate([m_sample[plain], sample[keep]]), np.concatenate([m_item[plain], item[keep]]),
            np.concatenate([m_score[plain], score[keep]]))
