"""DeepSpeed training on CPU: config resolution, one step, learning, early stopping, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seqrec_pipeline.data.samples import make_datasets
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.generative import load_model
from seqrec_pipeline.training import TrainConfig, load_deepspeed_config, train, warmup_cosine
from seqrec_pipeline.training.trainer import parameter_groups, resolve_deepspeed_config

from .helpers import BEHAVIORS, CODES, CPU_CONFIG, N_ITEMS, REPO, VOCAB, Marker, tiny_model


def datasets(sequences, *, encoder_decoder=False, **kwargs):
    options = dict(protocol="last_event", mode="user", max_history=8) | kwargs
    return make_datasets(sequences, BEHAVIORS, CODES, VOCAB, encoder_decoder=encoder_decoder, **options)


def config(tmp_path, **overrides) -> TrainConfig:
    fields = dict(output_dir=str(tmp_path / "run"), epochs=2, lr=1e-2, micro_batch_size=8, warmup_ratio=0.0,
                  weight_decay=0.01, patience=3, deepspeed_config=str(CPU_CONFIG), progress=False, log_every=1,
                  seed=0)  # fmt: skip
    return TrainConfig(**(fields | overrides))


# ----------------------------------------------------------------------------------------------------------
# Configuration pieces (no engine)
# ----------------------------------------------------------------------------------------------------------


def test_deepspeed_config_files_and_auto_fields(tmp_path):
    cpu = load_deepspeed_config(CPU_CONFIG)
    gpu = load_deepspeed_config(REPO / "conf" / "base" / "deepspeed" / "gpu.json")
    for ds in (cpu, gpu):
        assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["torch_adam"] is True
        assert ds["optimizer"]["params"]["fused"] is True  # torch's fused AdamW kernel (CPU and CUDA)
        assert ds["gradient_clipping"] > 0 and "zero_optimization" in ds and "scheduler" not in ds
    assert gpu["bf16"]["enabled"] and not cpu["bf16"]["enabled"]
    if not torch.cuda.is_available():
        assert load_deepspeed_config(None) == cpu  # the default follows the accelerator

    cfg = config(tmp_path, epochs=3, lr=3e-3, weight_decay=0.05, micro_batch_size=4, gradient_accumulation_steps=2)
    ds, steps_per_epoch, total = resolve_deepspeed_config(cpu, cfg, n_train=50, world_size=1)
    assert ds["optimizer"]["params"]["lr"] == 3e-3 and ds["optimizer"]["params"]["weight_decay"] == 0.05
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert (steps_per_epoch, total) == (7, 21)  # ceil(50 / 8) optimizer steps per epoch
    # a DeepSpeed scheduler block gets its step counts filled
    auto_steps = {"total_num_steps": "auto", "warmup_num_steps": "auto"}
    with_scheduler = cpu | {"scheduler": {"type": "WarmupCosineLR", "params": auto_steps}}
    ds, _, _ = resolve_deepspeed_config(with_scheduler, cfg, n_train=50, world_size=2)
    assert ds["scheduler"]["params"] == {"total_num_steps": 12, "warmup_num_steps": 1}
    with pytest.raises(ValueError, match="ZeRO stage 3"):
        resolve_deepspeed_config(cpu | {"zero_optimization": {"stage": 3}}, cfg, 50, 1)
    with pytest.raises(ValueError, match="left 'auto'"):
        resolve_deepspeed_config(cpu | {"gradient_clipping": "auto"}, cfg, 50, 1)


def test_warmup_cosine_schedule():
    factor = warmup_cosine(total_steps=10, warmup_ratio=0.2, min_lr_ratio=0.1)
    values = [factor(step) for step in range(12)]
    assert values[:2] == [0.5, 1.0]  # the first step already learns
    assert values[2] == pytest.approx(1.0) and values[6] == pytest.approx(0.55)  # cosine midpoint
    assert values[10] == values[11] == pytest.approx(0.1)  # floor after the end
    assert all(a >= b for a, b in zip(values[1:], values[2:]))
    assert warmup_cosine(10, 0.0, 0.0)(0) == 1.0


def test_parameter_groups_exclude_biases_and_norms():
    model = tiny_model("gamer")
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    n_params = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_params  # tied weights counted once
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    norms = [m.weight for name, m in model.named_modules() if name.endswith("norm")]
    assert norms and all(any(p is w for p in no_decay["params"]) for w in norms)
    assert any(p is model.get_input_embeddings().weight for p in decay["params"])  # as the HF Trainer


# ----------------------------------------------------------------------------------------------------------
# Training with the engine
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gamer", "qwen3_session", "gamer_session", "gamer_action_moe"])
def test_one_deepspeed_step_on_cpu(name, sequences, tmp_path):
    """Collated batches (with their session ranks) train every parameter of each model of the gamer family."""
    train_data, valid_data = datasets(sequences)
    model = tiny_model(name)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    logs = []
    result = train(model, train_data, valid_data,
                   config(tmp_path, epochs=1, micro_batch_size=len(train_data)),  # one optimizer step
                   on_log=lambda step, metrics: logs.append((step, metrics)))  # fmt: skip
    assert result["global_step"] == 1 and [step for step, _ in logs] == [1]
    metrics = logs[0][1]
    assert set(metrics) == {"train/loss", "train/lr", "train/samples_per_s", "train/tokens_per_s"}
    assert math.isfinite(metrics["train/loss"]) and metrics["train/lr"] == pytest.approx(1e-2)
    assert metrics["train/samples_per_s"] > 0 and metrics["train/tokens_per_s"] > 0
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert len(changed) == len(before)  # every parameter moved
    assert math.isfinite(result["history"][0]["valid/loss"])


def test_validation_loss_improves_on_a_learnable_pattern(sequences, tmp_path):
    train_data, valid_data = datasets(sequences, mode="event")
    epochs = []
    result = train(tiny_model("gamer"), train_data, valid_data, config(tmp_path, epochs=6, micro_batch_size=32),
                   on_epoch=lambda epoch, metrics: epochs.append(epoch))  # fmt: skip
    losses = [m["valid/loss"] for m in result["history"]]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert losses[-1] < 0.5 * losses[0], losses  # next item = previous + 1 is learnable
    assert result["best_epoch"] == 1 + losses.index(min(losses))
    assert result["metric_name"] == "valid/neg_loss" and result["best_metric"] == pytest.approx(-min(losses))
    best = load_model(result["best_dir"])
    assert type(best).__name__ == "GamerForCausalLM"


def test_the_item_head_learns_the_next_item_alongside_the_codes(sequences, tmp_path):
    train_data, valid_data = datasets(sequences, mode="event", item_labels=True)
    model = tiny_model("gamer", item_head=True, catalog_size=N_ITEMS)
    result = train(model, train_data, valid_data, config(tmp_path, epochs=6, micro_batch_size=32))
    losses = [m["valid/loss"] for m in result["history"]]  # codes + item head
    assert losses[-1] < 0.5 * losses[0], losses
    best = load_model(result["best_dir"]).eval()
    batch = valid_data.__getitems__(list(range(len(valid_data))))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "slot", "behavior", "level", "session")}
    with torch.no_grad():
        hidden = best.model(**inputs).last_hidden_state
    targets = batch["item_labels"][:, 1:]
    rows = targets != -100
    assert rows.sum() == len(valid_data)  # one target item per validation sample
    accuracy = (best.item_head(hidden[:, :-1][rows]).argmax(-1) == targets[rows]).float().mean()
    assert accuracy > 0.5  # next item = previous + 1 (chance: 1 / 12)


@pytest.mark.parametrize("name", ["tiger", "mbgen"])
def test_encoder_decoders_train_on_encoder_decoder_batches(name, sequences, tmp_path):
    train_data, valid_data = datasets(sequences, mode="event", encoder_decoder=True)
    result = train(tiny_model(name), train_data, valid_data, config(tmp_path, epochs=1, micro_batch_size=64))
    assert math.isfinite(result["history"][0]["valid/loss"])
    with pytest.raises(ValueError, match="encoder_decoder"):
        train(tiny_model(name), *datasets(sequences), config(tmp_path))


def test_early_stopping_with_patience_and_a_pluggable_metric(sequences, tmp_path):
    train_data, valid_data = datasets(sequences)
    scripted = {1: 0.1, 2: 0.3, 3: 0.2, 4: 0.3, 5: 0.9}  # best at epoch 2, no improvement in 3 and 4
    calls = []

    def metric(model, epoch):
        calls.append((epoch, model.training))
        return scripted[epoch]

    cfg = config(tmp_path, epochs=10, patience=2, metric_name="valid/ndcg_at_10", micro_batch_size=32)
    result = train(tiny_model("qwen3"), train_data, valid_data, cfg, validation_metric=metric)
    assert calls == [(1, False), (2, False), (3, False), (4, False)]  # evaluated in eval mode, then stopped
    assert result["stopped_early"] and result["epochs_run"] == 4 and not result["interrupted"]
    assert (result["best_epoch"], result["best_metric"]) == (2, 0.3)
    assert [m["valid/ndcg_at_10"] for m in result["history"]] == [0.1, 0.3, 0.2, 0.3]
    assert all("valid/loss" in m for m in result["history"])
    assert json.loads((tmp_path / "run" / "best" / "config.json").read_text())["model_type"] == "seqrec_qwen3"
    # resuming a run that already stopped early trains nothing more
    calls.clear()
    again = train(tiny_model("qwen3"), train_data, valid_data, config(tmp_path, **{**cfg.to_dict(), "resume": True}),
                  validation_metric=metric)  # fmt: skip
    assert calls == [] and again["epochs_run"] == 4 and again["best_epoch"] == 2


class Interrupted(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run(sequences, tmp_path):
    """2 epochs straight vs 1 epoch, crash, resume to 2: the same weights and metrics.

    Dropout, per-epoch augmentation and gradient accumulation are on, so RNG, sampler and optimizer
    states must all be restored for this to hold."""
    train_data, valid_data = datasets(sequences, augment=2, augment_mode="per_epoch")
    dropout = dict(attention_dropout=0.1, resid_dropout=0.1)
    fields = dict(epochs=2, micro_batch_size=8, gradient_accumulation_steps=2, warmup_ratio=0.3, lr=5e-3)

    straight_model = tiny_model("gamer", **dropout)
    straight = train(straight_model, train_data, valid_data, config(tmp_path / "a", **fields))

    def crash_after_first_epoch(epoch, metrics):
        raise Interrupted

    with pytest.raises(Interrupted):
        train(tiny_model("gamer", **dropout), train_data, valid_data, config(tmp_path / "b", **fields),
              on_epoch=crash_after_first_epoch)  # fmt: skip
    assert (tmp_path / "b" / "run" / "last").is_dir() and not (tmp_path / "b" / "run" / "last.tmp").exists()
    resumed_model = tiny_model("gamer", seed=123, **dropout)  # different init: everything comes from the checkpoint
    resumed = train(resumed_model, train_data, valid_data, config(tmp_path / "b", resume=True, **fields))

    for (name, a), (_, b) in zip(straight_model.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    without_time = lambda history: [{k: v for k, v in m.items() if k != "time_s"} for m in history]  # noqa: E731
    assert without_time(resumed["history"]) == without_time(straight["history"])
    assert resumed["global_step"] == straight["global_step"] and resumed["epochs_run"] == 2
    assert (resumed["best_epoch"], resumed["best_metric"]) == (straight["best_epoch"], straight["best_metric"])


def test_on_epoch_can_stop_a_run_gracefully(sequences, tmp_path):
    train_data, valid_data = datasets(sequences)
    result = train(tiny_model("qwen3"), train_data, valid_data, config(tmp_path, epochs=3, micro_batch_size=32),
                   on_epoch=lambda epoch, metrics: epoch == 1)  # fmt: skip
    assert result["interrupted"] and result["epochs_run"] == 1
    result = train(tiny_model("qwen3"), train_data, valid_data,
                   config(tmp_path, epochs=3, micro_batch_size=32, resume=True))  # fmt: skip
    assert not result["interrupted"] and result["epochs_run"] == 3 and len(result["history"]) == 3


@pytest.mark.parametrize(("base", "ds_changes"), [
    ("cpu.json", {"zero_optimization": {"stage": 1}}),
    ("cpu.json", {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}),
    ("gpu.json", {"train_micro_batch_size_per_gpu": 8}),  # ZeRO-1 with bf16
], ids=["zero1", "zero2-bf16", "gpu-config"])
def test_zero_optimizer_checkpoints_resume_with_weights_only_loading(sequences, tmp_path, base, ds_changes):
    """ZeRO optimizer states pickle a few DeepSpeed classes (loss scaler, stage, slices): allowed, and nothing else."""
    train_data, valid_data = datasets(sequences)
    ds = load_deepspeed_config(REPO / "conf" / "base" / "deepspeed" / base) | ds_changes
    train(tiny_model("qwen3"), train_data, valid_data, config(tmp_path, epochs=1, deepspeed_config=ds))
    assert list((tmp_path / "run" / "last").glob("*zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    result = train(tiny_model("qwen3"), train_data, valid_data,
                   config(tmp_path, epochs=2, deepspeed_config=ds, resume=True))  # fmt: skip
    assert result["epochs_run"] == 2 and len(result["history"]) == 2


@pytest.mark.parametrize("crafted", ["rng_state_0.pt", "mp_rank_00_model_states.pt"])
def test_resume_refuses_a_checkpoint_file_that_would_run_code(sequences, tmp_path, crafted):
    train_data, valid_data = datasets(sequences)
    train(tiny_model("qwen3"), train_data, valid_data, config(tmp_path, epochs=1))
    marker = tmp_path / "marker"
    torch.save({"state": Marker(marker)}, tmp_path / "run" / "last" / crafted)
    with pytest.raises(InputError, match=f"refusing to resume from .*last: {crafted} holds more than tensors and "
                                         "plain data \\(it asks to run io.open\\)"):
        train(tiny_model("qwen3"), train_data, valid_data, config(tmp_path, epochs=2, resume=True))
    assert not marker.exists()
