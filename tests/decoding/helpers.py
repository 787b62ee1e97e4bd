"""Tiny models, catalogs and histories for the decoding tests."""

from __future__ import annotations

import numpy as np
import torch

from seqrec_pipeline.models.generative import build_model
from seqrec_pipeline.vocab import TokenVocab

BEHAVIORS = ("pv", "cart", "fav", "buy")
LEVELS = (0, 1, 1, 2)  # two behaviors share a level, as in the reference datasets
MODELS = ("qwen3", "gamer", "tiger", "tiger_mb", "qwen3_session", "gamer_session", "qwen3_moe", "gamer_action_moe",
          "qwen3_session_moe", "mbgen")

# Tiny and dropout-free.  Larger-than-default initial weights make the random models' next-token
# distributions far from uniform, so rankings have clear gaps (ties would make "identical lists" flaky)
# and beam pruning actually matters.
TINY = {
    "qwen3": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, attention_dropout=0.0, initializer_range=0.3),
    "gamer": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, behavior_embed_dim=8, injection_layers=[0, 1],
                  cross_layers=[1, 2], attention_dropout=0.0, resid_dropout=0.0, initializer_range=0.3),
    "tiger": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0,
                  initializer_factor=2.0),
    "mbgen": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0,
                  initializer_factor=2.0, behavior_embed_dim=8, sparse_layers=[0, 1], encoder_injection_layers=[0],
                  decoder_injection_layers=[0, 1]),
}  # fmt: skip
_DECODER = {k: v for k, v in TINY["gamer"].items() if k not in ("injection_layers", "cross_layers")}
TINY |= {
    "tiger_mb": TINY["tiger"],
    "gamer_session": TINY["gamer"],
    "qwen3_session": {**_DECODER, "injection_layers": [], "cross_layers": []},
    **{name: {**_DECODER, "injection_layers": [0, 1], "cross_layers": []}
       for name in ("qwen3_moe", "gamer_action_moe", "qwen3_session_moe")},
}  # fmt: skip


def tiny_model(name: str, vocab: TokenVocab, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, vocab, **{**TINY[name], **overrides}).eval()


def random_codes(level_sizes: tuple[int, ...], n_items: int, seed: int = 0) -> np.ndarray:
    """A bijective SID table: ``n_items`` distinct code sequences drawn from the full code space."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s) for s in level_sizes], indexing="ij")
    space = np.stack(grids, axis=-1).reshape(-1, len(level_sizes))
    return space[rng.choice(len(space), n_items, replace=False)]


def random_histories(lengths: list[int], n_items: int, n_behaviors: int, seed: int = 0) -> list[np.ndarray]:
    """Per-user ``[(item, behavior), ...]`` arrays of the given lengths."""
    rng = np.random.default_rng(seed)
    return [np.column_stack([rng.integers(n_items, size=n), rng.integers(n_behaviors, size=n)]) for n in lengths]


def random_catalogs(n_behaviors: int, n_items: int, keep: float = 0.7, seed: int = 0) -> np.ndarray:
    """Behavior-restricted catalogs: a bool mask ``[n_behaviors, n_items]``."""
    return np.random.default_rng(seed).random((n_behaviors, n_items)) < keep
