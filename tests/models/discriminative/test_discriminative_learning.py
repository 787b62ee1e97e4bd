"""A few optimizer steps on learnable synthetic patterns must reduce the loss and rank the right
next item: trainability of every baseline, and use of the target behavior by the MB models."""

from __future__ import annotations

import inspect

import pytest
import torch
from discriminative_testutils import TINY, successor_data

from seqrec_pipeline.models.discriminative import DISCRIMINATIVE_MODELS, build_discriminative, topk_items


def train(model, data, steps: int, batch_size: int = 64, lr: float = 1e-2, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = data["items"].size(0)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        loss = model.loss({k: v[idx] for k, v in data.items()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def hits(model, data, k: int) -> float:
    model.eval()
    with torch.no_grad():
        logits = model.score(data["items"], data["behaviors"], data["target_behavior"])
    _, top = topk_items(logits, k)
    return (top == data["target_item"][:, None]).any(1).float().mean().item()


@pytest.mark.parametrize(
    "name, steps, max_loss_ratio",
    [
        ("sasrec", 80, 0.5),
        ("gru4rec", 80, 0.5),
        # cloze models also predict randomly masked history events: a noisier, slower loss
        ("bert4rec", 150, 0.75),
        ("mbht", 150, 0.75),
        ("mbstr", 150, 0.75),
        ("pbat", 100, 0.75),
    ],
)
def test_successor_pattern_is_learned(name, steps, max_loss_ratio):
    model = build_discriminative(name, 20, 2, 5, **{**TINY[name], "dropout": 0.1})
    train_data, test_data = successor_data(512, seed=0), successor_data(200, seed=5)
    before = hits(model, test_data, 5)
    losses = train(model, train_data, steps)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < max_loss_ratio * first, (first, last)
    assert before < 0.5  # an untrained model does not already know the pattern
    assert hits(model, test_data, 5) >= 0.9


def _behavior_step_hits(name: str) -> float:
    overrides = {"dropout": 0.1, "n_layers": 1}
    if "ft_ratio" in inspect.signature(DISCRIMINATIVE_MODELS[name].__init__).parameters:
        overrides["ft_ratio"] = 1.0
    model = build_discriminative(name, 20, 2, 5, **{**TINY[name], **overrides})
    train_data = successor_data(512, seed=0, behavior_step=True)
    test_data = successor_data(200, seed=5, behavior_step=True)
    train(model, train_data, steps=200)
    return hits(model, test_data, 1)


@pytest.mark.parametrize("name", ["mbht", "mbstr", "pbat", "sasrec_behavior", "bert4rec_behavior", "gru4rec_behavior"])
def test_behavior_aware_models_learn_behavior_specific_targets(name):
    """Target = last + 1 + target_behavior: a behavior-blind model cannot beat ~50% hit@1.

    One layer and only target masking (ft_ratio 1, cloze models) keep it fast; with these settings every MB
    model reached hit@1 >= 0.84 after 200 steps for init seeds 0-3."""
    assert _behavior_step_hits(name) >= 0.75


def test_a_behavior_blind_baseline_cannot_learn_behavior_specific_targets():
    """The bound above is out of reach when the requested behavior is ignored (sasrec: its _behavior variant
    passes the same test)."""
    assert _behavior_step_hits("sasrec") < 0.65
