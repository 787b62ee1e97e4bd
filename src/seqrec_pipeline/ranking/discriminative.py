"""Full-catalog ranking with the discriminative baselines (SASRec, BERT4Rec, ... in ``models.discriminative``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import torch

from seqrec_pipeline.models.discriminative import SequentialRecommender, topk_items
from seqrec_pipeline.splits import EvalSet, eval_set

from .core import Ranking, selection_scores


def right_aligned(flat_items: np.ndarray, flat_behaviors: np.ndarray, start: np.ndarray, end: np.ndarray,
                  width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``flat[start:end]`` (keeping the last ``width``) right-aligned into [N, width], +1, 0 = padding."""
    width = max(int(width), 1)
    idx = end[:, None] - width + np.arange(width)[None, :]
    keep = idx >= np.maximum(start, end - width)[:, None]
    idx = np.where(keep, idx, 0)
    if len(flat_items) == 0:
        zeros = np.zeros(idx.shape, np.int64)
        return zeros, zeros.copy()
    items = np.where(keep, flat_items[idx].astype(np.int64) + 1, 0)
    behaviors = np.where(keep, flat_behaviors[idx].astype(np.int64) + 1, 0)
    return items, behaviors


def eval_tensors(data: EvalSet, max_history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user histories of an :class:`EvalSet` as right-aligned [n_users, H] tensors (+1, 0 = padding)."""
    offsets = data.history_offsets
    items, behaviors = right_aligned(data.history_item, data.history_behavior, offsets[:-1], offsets[1:], max_history)
    return torch.from_numpy(items), torch.from_numpy(behaviors)


@torch.no_grad()
def rank_discriminative(model: SequentialRecommender, data: EvalSet, top_k: int, batch_size: int = 256,
                        max_history: int | None = None) -> Ranking:
    """Full-catalog top-k items [n_samples, top_k] (-1 = nothing) with their log-probabilities (log-softmax over
    the catalog), one row per (user, behavior) sample, scored with ``target_behavior`` = the sample's behavior."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(data.sample_user)
    out = np.full((n, top_k), -1, dtype=np.int64)
    scores = np.full((n, top_k), -np.inf, dtype=np.float32)
    hist_items, hist_behaviors = eval_tensors(data, max_history or model.max_len)
    users = torch.from_numpy(data.sample_user.astype(np.int64))
    target = torch.from_numpy(data.sample_behavior.astype(np.int64))
    for lo in range(0, n, batch_size):
        rows = users[lo:lo + batch_size]
        logits = model.score(hist_items[rows].to(device), hist_behaviors[rows].to(device),
                             target[lo:lo + batch_size].to(device))
        values, top = topk_items(logits.float().log_softmax(-1), top_k)
        out[lo:lo + len(rows), : top.shape[1]] = top.cpu().numpy()
        scores[lo:lo + len(rows), : top.shape[1]] = values.cpu().numpy()
    model.train(was_training)
    return Ranking(out, scores)


def validation_metric(sequences: pl.DataFrame, protocol: str, max_history: int, target_behavior: int,
                      k: int = 10, batch_size: int = 256, explore: bool = False,
                      candidates: int = 50, valid_users: int | None = None) -> Callable[[SequentialRecommender], dict]:
    """NDCG@k / HR@k of the target behavior on the validation window, or with ``explore`` of every behavior's
    list without history items against the explore targets (``core.selection_scores``); over at most
    ``valid_users`` users."""
    data = eval_set(sequences, protocol, "valid", max_history, behaviors=None if explore else [target_behavior],
                    max_users=valid_users)
    prefix = "valid/explore_" if explore else "valid/"

    def metric(model: SequentialRecommender) -> dict:
        if not data.n_samples:
            return {f"{prefix}ndcg@{k}": 0.0, f"{prefix}hit@{k}": 0.0}
        ranking = rank_discriminative(model, data, max(candidates, k) if explore else k, batch_size, max_history)
        return {prefix + name: value for name, value in selection_scores(data, ranking, k, explore).items()}

    return metric
