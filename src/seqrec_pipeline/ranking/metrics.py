"""Ranking metrics of the evaluation stage, vectorized numpy (docs/design.md#metrics).

Each sample is a ranked list of predicted items and a **set** of distinct target items T (e.g. every item of
one behavior in the user's test session).  With ``hits`` the binary hit vector of the ranked list:

- ``hit@k``    = 1 if any of the top k is a target (HR@k);
- ``recall@k`` = min(hits in the top k, |T|) / |T|;
- ``ndcg@k``   = sum over hits at ranks r <= k of 1 / log2(r + 1), divided by the ideal DCG of min(k, |T|)
  hits (ranks 1..min(k, |T|));
- ``mrr@k``    = 1 / rank of the first hit if it is within the top k, else 0.

As in the reference, hits are counted per list position and counting stops once |T| hits are found (this
only matters if a list repeats an item; the decoders never do).  Predicted item -1 (an empty slot) never
hits; target -1 is padding.

Per-behavior results are means over the samples of that behavior; "merged" is the sample-count-weighted mean
over behaviors, i.e. the mean over all samples, where a user counts once per behavior present in its target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from seqrec_pipeline.errors import InputError

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
METRICS: tuple[str, ...] = ("hit", "recall", "ndcg", "mrr")


def pad_targets(targets: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Target sets as an int array ``[n, T]``: distinct items per row, left-aligned, padded with -1.

    Accepts a padded array (-1 = padding) or a ragged sequence of item lists.
    """
    if isinstance(targets, np.ndarray) and targets.ndim == 2:
        padded = targets.astype(np.int64, copy=True)
    else:
        rows = [np.asarray(t, dtype=np.int64).reshape(-1) for t in targets]
        width = max((len(r) for r in rows), default=0)
        padded = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
        for i, row in enumerate(rows):  # one row per sample, only to lay out the ragged input
            padded[i, : len(row)] = row
    padded[padded < 0] = -1
    # Drop repeated targets (the targets are a set): sort each row, blank out repeats, move pads to the end.
    padded = np.sort(padded, axis=1)
    repeat = np.zeros_like(padded, dtype=bool)
    repeat[:, 1:] = padded[:, 1:] == padded[:, :-1]
    padded[repeat] = -1
    order = np.argsort(padded < 0, axis=1, kind="stable")
    return np.take_along_axis(padded, order, axis=1)


def _hits(predictions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Effective hit matrix ``[n, R]`` (capped at |T| hits) and the target-set sizes ``[n]``."""
    n_targets = (targets >= 0).sum(axis=1)
    if (n_targets == 0).any():
        raise InputError(f"samples {np.flatnonzero(n_targets == 0)[:10].tolist()} have no target item")
    hits = (predictions[:, :, None] == targets[:, None, :]).any(axis=2) & (predictions >= 0)
    return hits & (np.cumsum(hits, axis=1) <= n_targets[:, None]), n_targets


def per_sample_metrics(
    predictions: np.ndarray, targets: Sequence[Sequence[int]] | np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """``{"hit@k" | "recall@k" | "ndcg@k" | "mrr@k": float array [n]}`` for ranked ``predictions [n, R]``."""
    predictions = np.asarray(predictions, dtype=np.int64)
    if predictions.ndim != 2:
        raise InputError(f"predictions must be a ranked item array [n, R], got shape {predictions.shape}")
    targets = pad_targets(targets)
    if len(targets) != len(predictions):
        raise InputError(f"{len(predictions)} prediction lists but {len(targets)} target sets")
    if not ks or min(ks) < 1:
        raise InputError(f"cutoffs must be positive integers, got {list(ks)}")
    hits, n_targets = _hits(predictions, targets)
    n, length = hits.shape
    depth = max(max(ks), length)
    discount = 1.0 / np.log2(np.arange(2, depth + 2))  # rank r -> 1 / log2(r + 1)
    ideal = np.cumsum(discount)  # ideal[m - 1] = IDCG of m hits
    any_hit = hits.any(axis=1)
    first_hit = np.where(any_hit, hits.argmax(axis=1) if length else 0, depth)  # 0-based rank of the first hit

    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, : min(k, length)]
        n_hits = top.sum(axis=1)
        out[f"hit@{k}"] = (n_hits > 0).astype(np.float64)
        out[f"recall@{k}"] = np.minimum(n_hits, n_targets) / n_targets
        out[f"ndcg@{k}"] = (top * discount[: top.shape[1]]).sum(axis=1) / ideal[np.minimum(k, n_targets) - 1]
        out[f"mrr@{k}"] = np.where(first_hit < k, 1.0 / (first_hit + 1), 0.0)
    return out


def ranking_metrics(
    predictions: np.ndarray, targets: Sequence[Sequence[int]] | np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Means of :func:`per_sample_metrics` over the samples."""
    return {name: float(values.mean()) for name, values in per_sample_metrics(predictions, targets, ks).items()}


def metrics_by_behavior(
    predictions: np.ndarray,
    targets: Sequence[Sequence[int]] | np.ndarray,
    sample_behavior: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    behavior_names: Sequence[str] | Mapping[int, str] | None = None,
) -> dict:
    """Per-behavior and merged metrics.  One sample = one (user, behavior) pair with its target set.

    Returns ``{"merged": {metric: mean}, "by_behavior": {name: {metric: mean}}, "n_samples": {"merged": n,
    name: n_b}}``; behaviors without samples are left out.  Merged = sample-count-weighted mean over behaviors.
    """
    sample_behavior = np.asarray(sample_behavior, dtype=np.int64).reshape(-1)
    values = per_sample_metrics(predictions, targets, ks)
    if len(sample_behavior) != len(next(iter(values.values()))):
        raise InputError("sample_behavior needs one behavior per sample")

    def name_of(b: int) -> str:
        return str(behavior_names[b]) if behavior_names is not None else str(b)

    present = np.unique(sample_behavior)
    by_behavior = {
        name_of(b): {m: float(v[sample_behavior == b].mean()) for m, v in values.items()} for b in present
    }
    counts = {name_of(b): int((sample_behavior == b).sum()) for b in present}
    # Sum_b n_b * mean_b / Sum_b n_b is the plain mean over every sample.
    merged = {m: float(v.mean()) for m, v in values.items()}
    return {"merged": merged, "by_behavior": by_behavior, "n_samples": {"merged": len(sample_behavior), **counts}}


def behavior_accuracy(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Share of samples whose predicted next behavior is right.

    ``predicted [n]`` behavior indices (-1 = no prediction, counted wrong); ``actual`` either ``[n]`` behavior
    indices or a bool mask ``[n, n_behaviors]`` of the acceptable behaviors (e.g. every behavior present in
    the target session).
    """
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    actual = np.asarray(actual)
    if len(actual) != len(predicted):
        raise InputError(f"{len(predicted)} predictions but {len(actual)} true behaviors")
    if len(predicted) == 0:
        raise InputError("no samples")
    if actual.ndim == 1:
        correct = (predicted == actual) & (predicted >= 0)
    else:
        valid = (predicted >= 0) & (predicted < actual.shape[1])
        correct = valid & actual[np.arange(len(predicted)), np.where(valid, predicted, 0)].astype(bool)
    return float(correct.mean())


def behavior_item_ids(items: np.ndarray, behaviors: np.ndarray, n_items: int) -> np.ndarray:
    """One id per (behavior, item) pair, ``behavior * n_items + item`` (-1 where the item is -1), so behavior-item
    predictions can be scored with the metrics above against (behavior, item) targets."""
    items, behaviors = np.asarray(items, dtype=np.int64), np.asarray(behaviors, dtype=np.int64)
    return np.where((items >= 0) & (behaviors >= 0), behaviors * n_items + items, -1)


PARTS = ("repeat", "explore")


def metrics_by_part(
    predictions: np.ndarray,
    targets: Sequence[Sequence[int]],
    repeat: Sequence[Sequence[bool]],
    sample_behavior: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    behavior_names: Sequence[str] | Mapping[int, str] | None = None,
) -> dict:
    """Metrics on the **repeat** targets (items of the user's history) and on the **explore** targets (the
    others), each as :func:`metrics_by_behavior` over the samples that have at least one target of that part
    and scored against those targets only (Li et al., SIGIR 2023; the same ranked lists).  A part without
    samples is ``{"merged": None, "by_behavior": {}, "n_samples": {"merged": 0}}``."""
    predictions = np.asarray(predictions, dtype=np.int64)
    sample_behavior = np.asarray(sample_behavior, dtype=np.int64).reshape(-1)
    out = {}
    for part, wanted in (("repeat", True), ("explore", False)):
        kept = [[t for t, r in zip(ts, rs, strict=True) if bool(r) == wanted] for ts, rs in zip(targets, repeat)]
        rows = np.array([i for i, k in enumerate(kept) if k], dtype=np.int64)
        if len(rows) == 0:
            out[part] = {"merged": None, "by_behavior": {}, "n_samples": {"merged": 0}}
            continue
        out[part] = metrics_by_behavior(predictions[rows], [kept[i] for i in rows], sample_behavior[rows], ks,
                                        behavior_names)
    return out


def history_share(in_history: np.ndarray, predictions: np.ndarray, k: int) -> np.ndarray:
    """Per sample, the share of the (non-empty) top-``k`` items that come from the user's history."""
    top, real = np.asarray(in_history)[:, :k], np.asarray(predictions)[:, :k] >= 0
    return np.where(real.any(1), (top & real).sum(1) / np.maximum(real.sum(1), 1), 0.0)
