"""Sizes and data shared by the discriminative-baseline tests (imported by conftest and tests)."""

from __future__ import annotations

import torch

N_ITEMS, N_BEHAVIORS, MAX_LEN = 25, 3, 8

# Tiny versions of every baseline (the reference sizes are exercised by the factory test only).
TINY = {
    "sasrec": dict(hidden_size=16, inner_size=32, n_heads=2, n_layers=2),
    "bert4rec": dict(hidden_size=16, inner_size=32, n_heads=2, n_layers=2),
    "gru4rec": dict(embedding_size=16, hidden_size=24),
    "mbht": dict(hidden_size=16, inner_size=32, n_heads=2, n_layers=2, hyper_len=3, scales=(2, 4)),
    "mbstr": dict(hidden_size=16, inner_size=32, n_heads=2, n_layers=2, num_buckets=8, max_distance=10),
    "pbat": dict(hidden_size=16, inner_size=32, n_heads=2, n_layers=2),
}
# the "+behavior" variants keep their base model's sizes
BEHAVIOR_VARIANTS = {"sasrec_behavior": "sasrec", "bert4rec_behavior": "bert4rec", "gru4rec_behavior": "gru4rec"}
TINY.update({variant: TINY[base] for variant, base in BEHAVIOR_VARIANTS.items()})


def assert_differs(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-6) -> None:
    """``a`` and ``b`` differ by more than ``rel`` of ``a``'s scale. Untrained models react only
    weakly to context (embeddings start at std 0.02), so exactness tests run in float64 where
    rounding noise is ~1e-15 and a 1e-6 relative change is unambiguous."""
    scale = a.abs().max().clamp(min=1e-30)
    assert (a - b).abs().max() / scale > rel, f"max change {(a - b).abs().max():.3e} at scale {scale:.3e}"


def random_batch(B: int = 6, S: int = MAX_LEN, n_items: int = N_ITEMS, n_behaviors: int = N_BEHAVIORS, seed: int = 1):
    """Right-aligned histories of lengths S, S-2, S-4, ... (cycling), the last row empty;
    behaviors are 0 on padding."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (B, S), generator=g)
    lengths = (S - 2 * torch.arange(B)) % (S + 1)
    lengths[-1] = 0
    pad = torch.arange(S)[None, :] < (S - lengths)[:, None]
    items = items.masked_fill(pad, 0)
    behaviors = torch.randint(1, n_behaviors + 1, (B, S), generator=g).masked_fill(pad, 0)
    return {
        "items": items,
        "behaviors": behaviors,
        "target_item": torch.randint(0, n_items, (B,), generator=g),
        "target_behavior": torch.randint(0, n_behaviors, (B,), generator=g),
    }


def successor_data(
    n: int, n_items: int = 20, S: int = 5, n_behaviors: int = 2, seed: int = 0, behavior_step: bool = False
):
    """Learnable synthetic pattern: histories of consecutive items (i, i+1, ... mod n_items, random
    lengths 1..S, right-aligned, random behaviors) whose target is the successor of the last item.
    With ``behavior_step`` the target behavior b decides the step: the target is last + 1 + b, so
    only a model that reads ``target_behavior`` can rank it first."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, n_items, (n,), generator=g)
    length = torch.randint(1, S + 1, (n,), generator=g)
    offset = torch.arange(S)[None, :] - (S - length)[:, None]  # 0..L-1 on real events
    real = offset >= 0
    items = ((start[:, None] + offset) % n_items + 1) * real
    behaviors = torch.randint(1, n_behaviors + 1, (n, S), generator=g) * real
    if behavior_step:
        target_behavior = torch.randint(0, n_behaviors, (n,), generator=g)
    else:
        target_behavior = torch.full((n,), n_behaviors - 1)
    step = 1 + target_behavior if behavior_step else 1
    target = (start + length - 1 + step) % n_items
    return {"items": items, "behaviors": behaviors, "target_item": target, "target_behavior": target_behavior}
