"""Training of the discriminative baselines on the stored splits (no Kedro).

- :func:`training_samples`: one next-event sample per training event of every protocol user with a
  non-empty history (``splits``' history rule), as right-aligned int tensors (index + 1, 0 = padding);
  :func:`sequence_samples`: the same events as windows for per-position training (next-item models at
  every position, cloze models at the masked positions);
- :func:`fit_discriminative`: a plain PyTorch loop (AdamW, seeded length-bucketed batches, tqdm) with validation
  NDCG@10 of the target behavior on the validation window after every epoch
  (``ranking.discriminative.validation_metric``), early stopping and the best ``state_dict`` restored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.discriminative import SequentialRecommender, build_discriminative
from seqrec_pipeline.params import RecParams
from seqrec_pipeline.ranking.discriminative import right_aligned, validation_metric
from seqrec_pipeline.splits import BehaviorTable, Users, training_prefix

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


def training_samples(sequences: pl.DataFrame, protocol: str, max_history: int, users: Users = "protocol") -> Samples:
    """One sample per training event with a non-empty history (``splits``: the history rule of the
    protocol, at most ``max_history`` events; targets without history are dropped)."""
    events = training_prefix(sequences, protocol, users=users)
    start, stop = events.history_windows(protocol, max_history)
    keep = np.flatnonzero(stop > np.repeat(events.offsets[:-1], events.lengths))
    flat_items, flat_behaviors = events.item.astype(np.int64), events.behavior.astype(np.int64)
    items, behaviors = right_aligned(flat_items, flat_behaviors, start[keep], stop[keep], max_history)
    return Samples(
        items=torch.from_numpy(items), behaviors=torch.from_numpy(behaviors),
        target_item=torch.from_numpy(flat_items[keep]), target_behavior=torch.from_numpy(flat_behaviors[keep]),
        user_idx=torch.from_numpy(events.user[events.sequence_of_event()[keep]].astype(np.int64)),
        position=torch.from_numpy(events.position_in_sequence()[keep]),
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


def sequence_samples(sequences: pl.DataFrame, protocol: str, max_history: int,
                     users: Users = "protocol") -> SequenceSamples:
    """Each protocol user's training prefix (positions < ``<protocol>_valid``) cut into windows of
    ``max_history + 1`` events, newest first, so every training event i >= 1 is the target of exactly one
    position, with at most ``max_history`` earlier events of its window as history.  Unlike
    :func:`training_samples` a target also sees the earlier events of its own session (per-position
    training cannot stop at a session start); validation and test events are never included."""
    events = training_prefix(sequences, protocol, users=users).drop_short(2)
    lengths = events.lengths
    flat_items, flat_behaviors = events.item.astype(np.int64), events.behavior.astype(np.int64)
    width = max(int(max_history), 1)
    offsets = events.offsets[:-1]
    n_windows = -(-(lengths - 1) // width)  # ceil((targets) / width)
    user = np.repeat(np.arange(len(lengths)), n_windows)
    rank = np.arange(len(user)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    end = offsets[user] + lengths[user] - rank * width
    start = np.maximum(offsets[user], end - width - 1)
    items, behaviors = right_aligned(flat_items, flat_behaviors, start, end, width + 1)
    return SequenceSamples(items=torch.from_numpy(items), behaviors=torch.from_numpy(behaviors))


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


def train_recommender(sequences: pl.DataFrame, n_items: int, behaviors: pl.DataFrame, model: str, protocol: str,
                      max_history: int, seed: int, rec: RecParams, users: Users = "protocol",
                      on_epoch: Callable[[int, dict], None] | None = None,
                      valid_users: int | None = None) -> tuple[SequentialRecommender, dict]:
    """Build the discriminative baseline ``model`` (``rec.models.<model>`` overrides its reference sizes),
    train it on the training prefixes and return it with the training summary (the best epoch on the
    validation sessions of at most ``valid_users`` users)."""
    table = BehaviorTable.from_table(behaviors)
    torch.manual_seed(seed)  # the initial weights come from the seed, not from whatever ran before in the process
    try:
        net = build_discriminative(model, n_items, len(table), max_history, default_target_behavior=table.target,
                                   **rec.models.get(model.lower(), {}))
    except ValueError as exc:  # unknown model name or option: a user mistake, not a crash
        raise InputError(f"{exc} (smb_rec: set model=<name>, options under rec.models.<name>)") from exc
    if rec.sample_mode == "sequence":
        if not net.supports_sequence_loss:
            raise InputError(f"rec.sample_mode=sequence trains on event windows; {model} does not support it "
                             "(it has no sequence_loss); use rec.sample_mode=event")
        samples = sequence_samples(sequences, protocol, max_history, users)
    else:
        samples = training_samples(sequences, protocol, max_history, users)
    log.info("smb_rec %s (%s): %d training samples (%s), %d parameters", model, protocol, len(samples),
             rec.sample_mode, sum(p.numel() for p in net.parameters()))
    explore = rec.select_metric == "explore_ndcg@10"
    validate = validation_metric(sequences, protocol, max_history, table.target, batch_size=rec.batch_size,
                                 explore=explore, valid_users=valid_users)
    summary = fit_discriminative(
        net, samples, validate, epochs=rec.epochs, batch_size=rec.batch_size, lr=rec.lr,
        weight_decay=rec.weight_decay, patience=rec.patience, min_epochs=rec.min_epochs, seed=seed,
        device=rec.device, on_epoch=on_epoch, progress=rec.progress, select_metric=f"valid/{rec.select_metric}",
    )
    return net, summary
