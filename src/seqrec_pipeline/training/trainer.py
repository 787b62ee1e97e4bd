"""Train any generative model of the factory with the DeepSpeed engine
(docs/design.md#engine-optimizer-and-schedule, docs/design.md#model-selection).

``train(model, train_data, valid_data, TrainConfig(...))`` runs the same code path everywhere:

- one CPU process (CPU accelerator, gloo; rendezvous variables set here when absent, see
  ``distributed.py``), or one process per GPU under the ``deepspeed`` / ``torchrun`` launcher
  (``python -m seqrec_pipeline.training.launch job.json``; see ``launch.py``);
- engine built by ``deepspeed.initialize`` from a JSON config (defaults: ``conf/base/deepspeed/cpu.json``
  without CUDA, ``gpu.json`` with it).  Fields set to ``"auto"`` are filled from the ``TrainConfig``
  (HF-Trainer style): ``optimizer.params.lr`` / ``weight_decay``, ``train_micro_batch_size_per_gpu``,
  ``gradient_accumulation_steps`` and, if a DeepSpeed ``scheduler`` block is present,
  ``total_num_steps`` / ``warmup_num_steps``.  ``micro_batch_size`` / ``gradient_accumulation_steps`` of
  the ``TrainConfig`` override the JSON when set;
- learning-rate schedule: linear warmup over ``warmup_ratio`` of all optimizer steps, then cosine decay to
  ``min_lr_ratio * lr`` (a ``torch.optim.lr_scheduler.LambdaLR`` handed to DeepSpeed, which checkpoints
  it).  The JSON files have no ``scheduler`` block on purpose: DeepSpeed's ``WarmupCosineLR`` runs its
  first two optimizer steps at lr 0 and cannot disable warmup.  A ``scheduler`` block in a user config is
  honoured instead (DeepSpeed's own scheduler, ``"auto"`` step counts filled);
- AdamW with ``"torch_adam": true, "fused": true``: torch's fused AdamW (DeepSpeed's own CPU Adam needs a long
  JIT compile; torch's per-tensor loop is several times slower than the fused kernel for these many small
  tensors); biases and norm scales get no weight decay (the HF Trainer's split, as in the reference);
- epoch loop over a seeded, sort-free, rank-sharded order (``EpochSampler``; padded to whole optimizer
  steps so an epoch always ends on an accumulation boundary), tqdm bar on rank 0;
- every ``log_every`` optimizer steps ``on_log(step, {"train/loss", "train/lr", "train/samples_per_s",
  "train/tokens_per_s"})`` (loss = mean over the micro-batches since the last log, all ranks; lr = the one
  used by the last step; throughput = all ranks together, validation excluded);
- after every epoch: validation loss (the models' own tempered CE on the target codes, averaged over
  target tokens of the whole validation set) and the selection metric: ``validation_metric(model, epoch)``
  (higher is better; called on every rank, rank 0's value is used) or, by default, ``-valid/loss``.
  ``on_epoch(epoch, metrics)`` receives them; returning ``True`` asks the trainer to stop after this epoch
  (the run can be resumed);
- model selection / early stopping: the best epoch's weights are saved with ``save_pretrained`` to
  ``<output_dir>/best/``; training stops when the metric has not improved for ``patience`` epochs;
- resumable: after every epoch ``engine.save_checkpoint`` writes ``<output_dir>/last/`` (module,
  optimizer, scheduler; ``client_state`` = epoch, global step, best metric / epoch, patience counter,
  history, sampler state) plus per-rank RNG states.  ``TrainConfig(resume=True)`` continues from it and
  reproduces the uninterrupted run exactly (data order and augmentation draws depend only on
  (seed, epoch)).  The checkpoint is written to ``last.tmp`` and swapped in, so a crash while saving leaves
  the previous one intact.  Resuming reads every file with ``weights_only=True`` (tensors, plain data and
  the few DeepSpeed classes of ZeRO optimizer states; the RNG states are stored as tensors and plain
  values): a checkpoint file that would run code when unpickled is refused with an ``InputError``.

Callbacks run on rank 0 only.  ZeRO stage 3 is not supported (evaluation and ``save_pretrained`` assume
whole parameters on every rank).  With ``bf16`` the engine holds the model in bf16, so ``best/`` is saved
in bf16 (the fp32 master weights live only in the DeepSpeed checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
import random
import re
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from seqrec_pipeline.data.samples import IGNORE_INDEX, EpochSampler, SampleDataset, identity_collate
from seqrec_pipeline.errors import InputError

from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_from_main, setup_distributed

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf" / "base" / "deepspeed"
BEST, LAST = "best", "last"

LogCallback = Callable[[int, dict[str, float]], None]
EpochCallback = Callable[[int, dict[str, Any]], bool | None]
MetricFn = Callable[[torch.nn.Module, int], float]


@dataclass
class TrainConfig:
    """Training settings; every field is JSON-serializable (the launcher passes them in a job file)."""

    output_dir: str
    # the values of a run come from the ``train:`` parameters (conf/base/parameters.yml)
    epochs: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    patience: int  # epochs without improvement of the metric before stopping
    seed: int
    log_every: int  # optimizer steps between on_log calls
    min_lr_ratio: float = 0.0
    micro_batch_size: int | None = None  # per device; None: the JSON's train_micro_batch_size_per_gpu
    gradient_accumulation_steps: int | None = None  # None: the JSON's
    eval_batch_size: int | None = None  # None: 2 x micro batch
    deepspeed_config: str | dict | None = None  # path or dict; None: conf/base/deepspeed/{cpu,gpu}.json
    resume: bool = False  # continue from <output_dir>/last if it exists
    metric_name: str | None = None  # key of the selection metric; None: "valid/neg_loss" or "valid/metric"
    num_workers: int = 0  # DataLoader workers (collation is vectorized; 0 is usually enough)
    progress: bool = True  # tqdm bar on rank 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainState:
    """What the trainer needs to continue after an interruption (saved as DeepSpeed ``client_state``)."""

    epoch: int = 0  # last completed epoch (1-based)
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    early_stopped: bool = False  # patience ran out (a resumed run then ends at once)
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


def default_deepspeed_config_path() -> Path:
    return CONFIG_DIR / ("gpu.json" if torch.cuda.is_available() else "cpu.json")


def load_deepspeed_config(config: str | Path | dict | None) -> dict[str, Any]:
    if config is None:
        path = default_deepspeed_config_path()
        if not path.is_file():
            raise FileNotFoundError(f"no DeepSpeed config given and the default {path} does not exist")
        config = path
    if isinstance(config, dict):
        return json.loads(json.dumps(config))  # deep copy; the trainer fills "auto" fields in place
    return json.loads(Path(config).read_text())


def resolve_deepspeed_config(
    ds_config: dict[str, Any], config: TrainConfig, n_train: int, world_size: int
) -> tuple[dict[str, Any], int, int]:
    """Fill ``"auto"`` / overridden fields; returns (config, optimizer steps per epoch, total steps)."""
    ds = ds_config
    if config.micro_batch_size is not None:
        ds["train_micro_batch_size_per_gpu"] = int(config.micro_batch_size)
    if config.gradient_accumulation_steps is not None:
        ds["gradient_accumulation_steps"] = int(config.gradient_accumulation_steps)
    ds.setdefault("gradient_accumulation_steps", 1)
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from micro x accumulation x world size
    micro, accumulation = ds.get("train_micro_batch_size_per_gpu"), ds["gradient_accumulation_steps"]
    if not isinstance(micro, int) or not isinstance(accumulation, int):
        raise ValueError("set train_micro_batch_size_per_gpu / gradient_accumulation_steps (TrainConfig or JSON)")
    if ds.get("zero_optimization", {}).get("stage", 0) >= 3:
        raise ValueError("ZeRO stage 3 is not supported by this trainer; use stage 0, 1 or 2")
    optimizer = ds.setdefault("optimizer", {"type": "AdamW", "params": {"torch_adam": True, "fused": True}})
    params = optimizer.setdefault("params", {})
    for key, value in (("lr", config.lr), ("weight_decay", config.weight_decay)):
        if params.get(key, "auto") == "auto":
            params[key] = value
    steps_per_epoch = max(1, math.ceil(n_train / (micro * accumulation * world_size)))
    total_steps = steps_per_epoch * config.epochs
    if "scheduler" in ds:
        sched = ds["scheduler"].setdefault("params", {})
        for key, value in (("total_num_steps", total_steps),
                           ("warmup_num_steps", max(1, round(config.warmup_ratio * total_steps)))):  # fmt: skip
            if sched.get(key, "auto") == "auto":
                sched[key] = value
    ds.setdefault("steps_per_print", 10**9)  # the trainer does its own logging
    unresolved = [path for path, value in _walk(ds) if value == "auto"]
    if unresolved:
        raise ValueError(f"DeepSpeed config fields left 'auto' that the trainer cannot fill: {unresolved}")
    return ds, steps_per_epoch, total_steps


def _walk(tree: Any, prefix: str = ""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, tree


def warmup_cosine(total_steps: int, warmup_ratio: float, min_lr_ratio: float) -> Callable[[int], float]:
    """lr multiplier for LambdaLR: step k (0-based) of ``total_steps`` -> linear warmup, then cosine.

    The first step already uses ``1/warmup`` of the peak (not 0), and steps past the end stay at the floor.
    """
    warmup = round(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices (linear, expert and embedding tables); none on biases and norm
    scales.  This is the HF Trainer's split, which the reference trained with."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower()
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # tied weights appear twice
                continue
            seen.add(id(param))
            (decay if param.ndim >= 2 and not is_norm else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all devices


def rng_state() -> dict[str, Any]:
    """The random states as tensors and plain Python values only, so they load with ``weights_only=True``."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),  # (version, tuple of ints, gauss or None)
        "numpy": {"bit_generator": numpy_state["bit_generator"], "pos": int(numpy_state["state"]["pos"]),
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state({"bit_generator": saved["bit_generator"], "has_gauss": saved["has_gauss"],
                         "gauss": saved["gauss"],
                         "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------


def is_encoder_decoder(model: torch.nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def count_targets(batch: dict[str, torch.Tensor], encoder_decoder: bool) -> torch.Tensor:
    """Label tokens the loss averages over (causal models predict labels[:, 1:])."""
    labels = batch["labels"] if encoder_decoder else batch["labels"][:, 1:]
    return (labels != IGNORE_INDEX).sum()


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    tokens = int(batch["attention_mask"].sum())
    if "decoder_input_ids" in batch:
        tokens += batch["decoder_input_ids"].numel()
    return tokens


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


@torch.no_grad()
def validation_loss(engine: Any, loader: DataLoader, dist: DistInfo, encoder_decoder: bool) -> float:
    """Target-token-weighted mean of the models' tempered CE over the whole (rank-sharded) loader."""
    was_training = engine.module.training
    engine.eval()
    total = torch.zeros((), dtype=torch.float64, device=dist.device)
    count = torch.zeros((), dtype=torch.float64, device=dist.device)
    for batch in loader:
        batch = to_device(batch, dist.device)
        n = count_targets(batch, encoder_decoder)
        total += engine(**batch).loss.double() * n
        count += n
    engine.train(was_training)
    total, count = all_reduce_sum([float(total), float(count)], dist.device)
    return total / count if count else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------


# Settings that may change between a run and its resumption without changing what is being trained.
RESUMABLE_CHANGES = {"epochs", "patience", "resume", "progress", "log_every", "num_workers", "output_dir"}


def save_last(
    engine: Any, output_dir: Path, state: TrainState, sampler: EpochSampler, config: TrainConfig, dist: DistInfo
) -> None:
    """DeepSpeed checkpoint + per-rank RNG states in ``<output_dir>/last``, swapped in atomically."""
    tmp, last, old = output_dir / f"{LAST}.tmp", output_dir / LAST, output_dir / f"{LAST}.old"
    client_state = {"train_state": dataclasses.asdict(state), "sampler": sampler.state_dict(),
                    "config": config.to_dict()}  # fmt: skip
    engine.save_checkpoint(str(output_dir), tag=tmp.name, client_state=client_state, save_latest=False)
    torch.save(rng_state(), tmp / f"rng_state_{dist.rank}.pt")
    barrier()
    if dist.is_main:
        if last.exists():
            last.rename(old)
        tmp.rename(last)
        shutil.rmtree(old, ignore_errors=True)
    barrier()


def _deepspeed_safe_globals() -> list[Any]:
    """The classes DeepSpeed pickles into its checkpoint files besides tensors and plain containers (ZeRO
    optimizer states: loss scaler, stage, parameter slices).  Unpickling them only sets attributes."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str | Path, map_location: Any = None) -> Any:
    """``torch.load`` of a checkpoint file that can only rebuild tensors, plain data and the allowed
    DeepSpeed classes; anything else (a pickle that would run code) is refused with an ``InputError``."""
    try:
        with torch.serialization.safe_globals(_deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"it asks to run {found.group(1)}" if found else "it is not a plain tensor checkpoint"
        folder = Path(path).parent
        raise InputError(f"refusing to resume from {folder}: {Path(path).name} holds more than tensors and plain "
                         f"data ({what}), so loading it could execute code; this trainer did not write it. Delete "
                         f"{folder} to train this configuration from scratch.") from None


@contextmanager
def _safe_checkpoint_loads(engine: Any):
    """DeepSpeed reads every checkpoint file through ``engine.checkpoint_engine.load``; route it to
    :func:`safe_load` while the checkpoint is loaded."""
    checkpoint_engine = engine.checkpoint_engine
    checkpoint_engine.load = safe_load  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        del checkpoint_engine.load


def load_last(engine: Any, output_dir: Path, sampler: EpochSampler, config: TrainConfig, dist: DistInfo) -> TrainState:
    with _safe_checkpoint_loads(engine):
        path, client_state = engine.load_checkpoint(str(output_dir), tag=LAST)
    if path is None:
        raise RuntimeError(f"could not load the DeepSpeed checkpoint in {output_dir / LAST}")
    saved, current = client_state.get("config", {}), config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, current[k]) != current[k])
    if changed:
        log.warning("resuming with changed settings %s: the run will not match an uninterrupted one", changed)
    if saved.get("epochs", config.epochs) != config.epochs:
        log.warning("resuming with epochs %s -> %s: the lr schedule is stretched from here on",
                    saved.get("epochs"), config.epochs)  # fmt: skip
    sampler.load_state_dict(client_state["sampler"])
    rng_file = output_dir / LAST / f"rng_state_{dist.rank}.pt"
    if rng_file.exists():
        set_rng_state(safe_load(rng_file))
    else:
        log.warning("%s missing: random state not restored (dropout masks will differ)", rng_file)
    return TrainState(**client_state["train_state"])


def save_best(model: torch.nn.Module, output_dir: Path, dist: DistInfo) -> None:
    """``save_pretrained`` into a temporary folder, then swap it in (readers never see half a model)."""
    if dist.is_main:
        from transformers.utils import logging as hf_logging

        best, tmp = output_dir / BEST, output_dir / f"{BEST}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "writing shards" bar per improved epoch is noise
        try:
            model.save_pretrained(tmp)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        shutil.rmtree(best, ignore_errors=True)
        tmp.rename(best)
    barrier()


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


def train(
    model: torch.nn.Module,
    train_data: SampleDataset,
    valid_data: SampleDataset | None,
    config: TrainConfig,
    *,
    on_log: LogCallback | None = None,
    on_epoch: EpochCallback | None = None,
    validation_metric: MetricFn | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; returns ``{"best_epoch", "best_metric", "metric_name", "epochs_run",
    "stopped_early", "interrupted", "global_step", "history", "best_dir", "last_dir", "output_dir"}``.

    ``history`` holds one dict per epoch (``epoch``, ``train/loss``, ``train/lr``, ``valid/loss``, the
    metric, ``time_s``).  Without ``valid_data`` and ``validation_metric`` there is no model selection:
    ``best/`` is the final model.  Load the best weights with ``models.generative.load_model(best_dir)``.
    """
    import deepspeed

    dist = setup_distributed()
    if train_data.collator.encoder_decoder != is_encoder_decoder(model):
        kind = "encoder-decoder" if is_encoder_decoder(model) else "decoder-only"
        raise ValueError(f"the model is {kind} but the dataset's collator is not built for it (encoder_decoder)")
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metric_name = config.metric_name or ("valid/metric" if validation_metric else "valid/neg_loss")
    seed_everything(config.seed)

    train_data.set_epoch(1)  # per-epoch samples: size the schedule on epoch 1's draw
    ds_config, steps_per_epoch, total_steps = resolve_deepspeed_config(
        load_deepspeed_config(config.deepspeed_config), config, len(train_data), dist.world_size
    )
    micro, accumulation = ds_config["train_micro_batch_size_per_gpu"], ds_config["gradient_accumulation_steps"]
    scheduler = None
    if "scheduler" not in ds_config:
        factor = warmup_cosine(total_steps, config.warmup_ratio, config.min_lr_ratio)
        scheduler = lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)  # noqa: E731
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=parameter_groups(model, config.weight_decay), config=ds_config,
        lr_scheduler=scheduler,
    )  # fmt: skip
    basic = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO / bf16 wrappers hold the torch one
    log.info("optimizer %s (fused: %s), ZeRO stage %d", type(basic).__name__,
             basic.defaults.get("fused") if hasattr(basic, "defaults") else None, engine.zero_optimization_stage())
    encoder_decoder = is_encoder_decoder(model)

    sampler = EpochSampler(train_data, seed=config.seed, rank=dist.rank, world_size=dist.world_size,
                           pad_to=micro * accumulation * dist.world_size)  # fmt: skip
    # A private generator: iterating a DataLoader must not consume the global RNG (dropout, resume).
    loader_rng = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train_data, batch_size=micro, sampler=sampler, collate_fn=identity_collate,
                              num_workers=config.num_workers, generator=loader_rng)  # fmt: skip
    valid_loader = None
    if valid_data is not None and len(valid_data):
        valid_sampler = EpochSampler(valid_data, seed=config.seed, shuffle=False, rank=dist.rank,
                                     world_size=dist.world_size)  # fmt: skip
        valid_loader = DataLoader(valid_data, batch_size=config.eval_batch_size or 2 * micro,
                                  sampler=valid_sampler, collate_fn=identity_collate,
                                  num_workers=config.num_workers, generator=loader_rng)  # fmt: skip

    state = TrainState()
    if config.resume and (output_dir / LAST).is_dir():
        state = load_last(engine, output_dir, sampler, config, dist)
        log.info("resumed from %s after epoch %d (step %d)", output_dir / LAST, state.epoch, state.global_step)
    elif config.resume:
        log.info("resume requested but %s does not exist: starting from scratch", output_dir / LAST)

    interrupted = False
    log.info("training %d epochs x %d optimizer steps (micro batch %d x accumulation %d x %d ranks)",
             config.epochs, steps_per_epoch, micro, accumulation, dist.world_size)  # fmt: skip
    epoch = state.epoch
    while not state.early_stopped and epoch < config.epochs:
        epoch += 1
        epoch_start = time.perf_counter()
        train_data.set_epoch(epoch)
        sampler.set_epoch(epoch)
        train_loss, lr = _train_epoch(engine, train_loader, dist, config, epoch, state, on_log, encoder_decoder)

        metrics: dict[str, Any] = {"epoch": epoch, "train/loss": train_loss, "train/lr": lr}
        if valid_loader is not None:
            metrics["valid/loss"] = validation_loss(engine, valid_loader, dist, encoder_decoder)
        if validation_metric is not None:
            engine.module.eval()
            with torch.no_grad():
                value = float(validation_metric(engine.module, epoch))
            engine.module.train()
            metrics[metric_name] = broadcast_from_main(value, dist.device)
        elif "valid/loss" in metrics:
            metrics[metric_name] = -metrics["valid/loss"]
        metrics["time_s"] = time.perf_counter() - epoch_start

        value = metrics.get(metric_name)
        if value is None:  # no model selection: the latest model is the "best"
            improved = True
        else:
            improved = not math.isnan(value) and (state.best_metric is None or value > state.best_metric)
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = value, epoch, 0
            save_best(engine.module, output_dir, dist)
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        state.history.append(metrics)
        state.early_stopped = state.bad_epochs >= config.patience
        save_last(engine, output_dir, state, sampler, config, dist)

        stop = False
        if dist.is_main:
            log.info("epoch %d: %s", epoch, {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()})
            if on_epoch is not None:
                stop = bool(on_epoch(epoch, metrics))
        if broadcast_from_main(float(stop), dist.device):
            interrupted = not state.early_stopped and epoch < config.epochs
            break

    return {
        "best_epoch": state.best_epoch,
        "best_metric": state.best_metric,
        "metric_name": metric_name,
        "epochs_run": state.epoch,
        "stopped_early": state.early_stopped,
        "interrupted": interrupted,
        "global_step": state.global_step,
        "history": state.history,
        "output_dir": str(output_dir),
        "best_dir": str(output_dir / BEST),
        "last_dir": str(output_dir / LAST),
    }


def _train_epoch(
    engine: Any,
    loader: DataLoader,
    dist: DistInfo,
    config: TrainConfig,
    epoch: int,
    state: TrainState,
    on_log: LogCallback | None,
    encoder_decoder: bool,
) -> tuple[float, float]:
    """One pass over the loader; returns (mean micro-batch loss over all ranks, last lr)."""
    engine.train()
    # Losses stay on the device until a log step: one host sync per log, not per micro-batch.
    epoch_loss = torch.zeros((), dtype=torch.float64, device=dist.device)
    window_loss = torch.zeros((), dtype=torch.float64, device=dist.device)
    n_micro = window_micro = window_samples = window_tokens = 0
    window_start = time.perf_counter()
    lr = engine.get_lr()[0]
    bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{config.epochs}", disable=not (config.progress and dist.is_main),
               dynamic_ncols=True, leave=False)  # fmt: skip
    for batch in loader:
        window_samples += len(batch["input_ids"])
        window_tokens += count_tokens(batch)
        batch = to_device(batch, dist.device)
        loss = engine(**batch).loss
        engine.backward(loss)
        lr = engine.get_lr()[0]  # the lr this step uses (the scheduler advances inside step())
        steps_before = engine.global_steps
        engine.step()
        epoch_loss += loss.detach().double()
        window_loss += loss.detach().double()
        n_micro += 1
        window_micro += 1
        bar.update(1)
        if engine.global_steps == steps_before:
            continue  # still accumulating
        state.global_step = engine.global_steps
        if config.log_every and state.global_step % config.log_every == 0:
            loss_sum, micro_sum, samples, tokens = all_reduce_sum(
                [float(window_loss), window_micro, window_samples, window_tokens], dist.device
            )
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            logs = {"train/loss": loss_sum / max(micro_sum, 1), "train/lr": lr,
                    "train/samples_per_s": samples / elapsed, "train/tokens_per_s": tokens / elapsed}  # fmt: skip
            bar.set_postfix(loss=f"{logs['train/loss']:.4f}", lr=f"{lr:.2e}")
            if dist.is_main and on_log is not None:
                on_log(state.global_step, logs)
            window_loss.zero_()
            window_micro = window_samples = window_tokens = 0
            window_start = time.perf_counter()
    bar.close()
    total, count = all_reduce_sum([float(epoch_loss), n_micro], dist.device)
    return total / max(count, 1), lr


class JsonlLogger:
    """``on_log`` / ``on_epoch`` callbacks appending one JSON line per event (``{"kind", "step"|"epoch",
    "metrics"}``); the launched job writes one so the parent process (a Kedro node) can replay the curves
    into MLflow afterwards."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"kind": "step", "step": step, "metrics": metrics})

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._write({"kind": "epoch", "epoch": epoch, "metrics": metrics})

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        path = Path(path)
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
