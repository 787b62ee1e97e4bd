"""Training and ranking of the discriminative baselines on the stored splits (no Kedro).

- :func:`training_samples`: one next-event sample per training target event of every protocol user
  (positions before the user's validation point), as right-aligned int tensors (index + 1, 0 = padding);
  :func:`sequence_samples`: the same events as windows for per-position training (next-item models at
  every position, cloze models at the masked positions);
- :func:`fit_discriminative`: a plain PyTorch loop (AdamW, seeded length-bucketed batches, tqdm) with validation
  NDCG@10 of the target behavior on the validation window after every epoch, early stopping and the
  best ``state_dict`` restored;
- :func:`rank_discriminative`: full-catalog top-k for every sample of an :class:`EvalSet`, with the
  sample's behavior as the requested target behavior.

History semantics follow the evaluation (``evaluation.eval_set``): for ``last_session`` a target event
sees the events before *its session's* start, for ``last_event`` the events before it; either way at
most ``max_history`` of the most recent ones. Samples with an empty history are dropped (the first
event, or the whole first session for ``last_session``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.evaluation import EvalSet, eval_set
from seqrec_pipeline.metrics import metrics_by_behavior
from seqrec_pipeline.models.discriminative import SequentialRecommender, topk_items

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """Training samples: right-aligned histories and their next-event targets."""

    items: torch.Tensor  # int64 [N, H], item index + 1, 0 = padding
    behaviors: torch.Tensor  # int64 [N, H], behavior index + 1, 0 = padding
    target_item: torch.Tensor  # int64 [N], dense item index
    target_behavior: torch.Tensor  # int64 [N], dense behavior index
    user_idx: torch.Tensor  # int64 [N]
    position: torch.Tensor  # int64 [N], position of the target in the user's sequence

    def __post_init__(self) -> None:
        self.lengths = (self.items != 0).sum(1)  # real history events per row

    def __len__(self) -> int:
        return int(self.target_item.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        width = _batch_width(self.lengths, idx)  # rows are right-aligned: leading columns are padding
        return {"items": self.items[idx, -width:].to(device), "behaviors": self.behaviors[idx, -width:].to(device),
                "target_item": self.target_item[idx].to(device),
                "target_behavior": self.target_behavior[idx].to(device)}


def _batch_width(lengths: torch.Tensor, idx: torch.Tensor) -> int:
    """Columns a batch of right-aligned rows needs: its longest row (the models are padding-invariant)."""
    return max(int(lengths[idx].max()), 1) if len(idx) else 1


def length_bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                            bucket: int = 64) -> list[torch.Tensor]:
    """Seeded random batches of similar-length rows: shuffle, sort each run of ``bucket`` batches by length,
    cut it into batches, shuffle the batches. With padding trimmed per batch (``batch``) a step costs its
    longest row instead of the full width (retailrocket windows: 36 % of the cells are padding)."""
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    for part in order.split(batch_size * bucket):
        batches.extend(part[torch.argsort(lengths[part], stable=True)].split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _windows(flat_items: np.ndarray, flat_behaviors: np.ndarray, start: np.ndarray, end: np.ndarray,
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


def training_samples(sequences: pl.DataFrame, protocol: str, max_history: int) -> Samples:
    """One sample per training event i >= 1 (position < the user's ``<protocol>_valid``) with a
    non-empty history: the events before i's session start (``last_session``) or before i
    (``last_event``), truncated to the ``max_history`` most recent."""
    valid_col = f"{protocol}_valid"
    if valid_col not in sequences.columns:
        raise InputError(f"unknown split.protocol '{protocol}'; choose last_event or last_session")
    users = sequences.filter(pl.col(valid_col) >= 0).select("user_idx", "item", "behavior", "session", valid_col)
    events = (
        users.with_columns(pl.int_range(pl.len()).alias("row"))
        .explode("item", "behavior", "session")
        .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
        .filter(pl.col("pos") < pl.col(valid_col))  # validation / test events never enter training
        .with_columns(pl.col("pos").min().over("row", "session").alias("session_start"))
    )
    flat_items = events["item"].to_numpy().astype(np.int64)
    flat_behaviors = events["behavior"].to_numpy().astype(np.int64)
    offset = np.arange(events.height, dtype=np.int64) - events["pos"].to_numpy().astype(np.int64)  # user's row 0
    pos = events["pos"].to_numpy().astype(np.int64)
    cut = events["session_start"].to_numpy().astype(np.int64) if protocol == "last_session" else pos
    keep = cut >= 1  # i >= 1 and a non-empty history
    start, end = offset[keep], offset[keep] + cut[keep]
    items, behaviors = _windows(flat_items, flat_behaviors, start, end, max_history)
    return Samples(
        items=torch.from_numpy(items), behaviors=torch.from_numpy(behaviors),
        target_item=torch.from_numpy(flat_items[keep]), target_behavior=torch.from_numpy(flat_behaviors[keep]),
        user_idx=torch.from_numpy(events["user_idx"].to_numpy().astype(np.int64)[keep]),
        position=torch.from_numpy(pos[keep]),
    )


@dataclass
class SequenceSamples:
    """Right-aligned windows of consecutive training events (item / behavior index + 1, 0 = padding) for
    per-position training (:meth:`SequentialRecommender.sequence_loss`: next-item models predict every
    position, cloze models a masked share of it)."""

    items: torch.Tensor  # int64 [N, W + 1]
    behaviors: torch.Tensor  # int64 [N, W + 1]

    def __post_init__(self) -> None:
        self.lengths = (self.items != 0).sum(1)  # real events per window

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        width = _batch_width(self.lengths, idx)
        return {"sequence_items": self.items[idx, -width:].to(device),
                "sequence_behaviors": self.behaviors[idx, -width:].to(device)}


def sequence_samples(sequences: pl.DataFrame, protocol: str, max_history: int) -> SequenceSamples:
    """Each protocol user's training prefix (positions < ``<protocol>_valid``) cut into windows of
    ``max_history + 1`` events, newest first, so every training event i >= 1 is the target of exactly one
    position, with at most ``max_history`` earlier events of its window as history.  Unlike
    :func:`training_samples` a target also sees the earlier events of its own session (per-position
    training cannot stop at a session start); validation and test events are never included."""
    valid_col = f"{protocol}_valid"
    if valid_col not in sequences.columns:
        raise InputError(f"unknown split.protocol '{protocol}'; choose last_event or last_session")
    users = sequences.filter(pl.col(valid_col) >= 2)
    lengths = users[valid_col].to_numpy().astype(np.int64)
    prefix = users.select(pl.col("item", "behavior").list.head(pl.col(valid_col))).explode("item", "behavior")
    flat_items = prefix["item"].to_numpy().astype(np.int64)
    flat_behaviors = prefix["behavior"].to_numpy().astype(np.int64)
    width = max(int(max_history), 1)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_windows = -(-(lengths - 1) // width)  # ceil((targets) / width)
    user = np.repeat(np.arange(len(lengths)), n_windows)
    rank = np.arange(len(user)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    end = offsets[user] + lengths[user] - rank * width
    start = np.maximum(offsets[user], end - width - 1)
    items, behaviors = _windows(flat_items, flat_behaviors, start, end, width + 1)
    return SequenceSamples(items=torch.from_numpy(items), behaviors=torch.from_numpy(behaviors))


def eval_tensors(data: EvalSet, max_history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user histories of an :class:`EvalSet` as right-aligned [n_users, H] tensors (+1, 0 = padding)."""
    lengths = np.array([len(h) for h in data.histories], dtype=np.int64)
    flat = np.concatenate([h.reshape(-1, 2) for h in data.histories] or [np.zeros((0, 2), np.int64)], axis=0)
    end = np.cumsum(lengths)
    items, behaviors = _windows(flat[:, 0], flat[:, 1], end - lengths, end, max_history)
    return torch.from_numpy(items), torch.from_numpy(behaviors)


@torch.no_grad()
def rank_discriminative(model: SequentialRecommender, data: EvalSet, top_k: int, batch_size: int = 256,
                        max_history: int | None = None) -> np.ndarray:
    """Full-catalog top-k items [n_samples, top_k] (-1 = nothing), one row per (user, behavior) sample,
    scored with ``target_behavior`` = the sample's behavior."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(data.sample_user)
    out = np.full((n, top_k), -1, dtype=np.int64)
    hist_items, hist_behaviors = eval_tensors(data, max_history or model.max_len)
    users = torch.from_numpy(data.sample_user.astype(np.int64))
    target = torch.from_numpy(data.sample_behavior.astype(np.int64))
    for lo in range(0, n, batch_size):
        rows = users[lo:lo + batch_size]
        logits = model.score(hist_items[rows].to(device), hist_behaviors[rows].to(device),
                             target[lo:lo + batch_size].to(device))
        _, top = topk_items(logits.float(), top_k)
        out[lo:lo + len(rows), : top.shape[1]] = top.cpu().numpy()
    model.train(was_training)
    return out


def validation_metric(sequences: pl.DataFrame, protocol: str, max_history: int, target_behavior: int,
                      k: int = 10, batch_size: int = 256) -> Callable[[SequentialRecommender], dict]:
    """NDCG@k / HR@k of the target behavior on the validation window."""
    data = eval_set(sequences, protocol, "valid", max_history, behaviors=[target_behavior])

    def metric(model: SequentialRecommender) -> dict:
        if not len(data.targets):
            return {f"valid/ndcg@{k}": 0.0, f"valid/hit@{k}": 0.0}
        items = rank_discriminative(model, data, k, batch_size, max_history)
        merged = metrics_by_behavior(items, data.targets, data.sample_behavior, ks=(k,))["merged"]
        return {f"valid/ndcg@{k}": merged[f"ndcg@{k}"], f"valid/hit@{k}": merged[f"hit@{k}"]}

    return metric


def fit_discriminative(model: SequentialRecommender, samples: Samples | SequenceSamples,
                       validate: Callable[[SequentialRecommender], dict] | None, *, epochs: int = 10,
                       batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 3,
                       min_epochs: int = 0, seed: int = 42, device: str | None = None, select_metric: str = "valid/ndcg@10",
                       on_epoch: Callable[[int, dict], None] | None = None, progress: bool = True) -> dict:
    """Train in place; the best epoch's weights (by ``select_metric``) are loaded back. Returns a summary.

    Early stopping: after ``patience`` epochs without improvement, but never before ``min_epochs`` (cloze models
    such as BERT4Rec sit on a plateau for their first ~25 epochs on retailrocket windows before improving)."""
    if len(samples) == 0:
        raise InputError("no training samples: every protocol user lacks a training event with a history; "
                         "check the dataset filters or use split.protocol=last_event")
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best_value, best_epoch, best_state, bad_epochs, history = -float("inf"), 0, None, 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        total, batches = 0.0, 0
        bar = tqdm(length_bucketed_batches(samples.lengths, batch_size, generator), desc=f"epoch {epoch}/{epochs}",
                   disable=not progress, leave=False, mininterval=2.0)
        for idx in bar:
            loss = model.loss(samples.batch(idx, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
            bar.set_postfix(loss=f"{total / batches:.4f}", refresh=False)
        bar.close()
        metrics = {"train/loss": total / max(batches, 1), "train/seconds": time.perf_counter() - t0}
        if validate is not None:
            metrics.update(validate(model))
        value = metrics.get(select_metric, -metrics["train/loss"])
        history.append({"epoch": epoch, **metrics})
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if value > best_value:
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= patience and epoch >= min_epochs:
                log.info("early stop after epoch %d (best %s %.4f at epoch %d)", epoch, select_metric, best_value,
                         best_epoch)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "best_value": best_value, "select_metric": select_metric,
            "epochs_run": len(history), "n_train_samples": len(samples),
            "n_parameters": int(sum(p.numel() for p in model.parameters())), "history": history}


def checkpoint(model: SequentialRecommender, summary: dict | None = None) -> dict:
    """Picklable ``{"config", "state_dict", "summary"}``; rebuild with ``build_discriminative(**config)``."""
    return {"config": copy.deepcopy(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "summary": summary or {}}
