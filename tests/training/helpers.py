"""Helpers of the training tests: a tiny learnable synthetic dataset and tiny models.

All trainings here run in this one pytest process, which initialises the (gloo, one-process) DeepSpeed
process group once; the first ``deepspeed.initialize`` JIT-compiles a small comm extension (20-50 s)
that is cached in ``TORCH_EXTENSIONS_DIR`` for later runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from seqrec_pipeline.models.generative import build_model
from seqrec_pipeline.vocab import TokenVocab

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "conf" / "base" / "deepspeed" / "cpu.json"

BEHAVIORS = pl.DataFrame({
    "behavior_idx": pl.Series([0, 1, 2], dtype=pl.Int8), "behavior": ["pv", "cart", "buy"],
    "level": pl.Series([0, 1, 2], dtype=pl.Int8), "is_target": [False, False, True],
})  # fmt: skip
N_ITEMS = 12
VOCAB = TokenVocab(("pv", "cart", "buy"), (4, 3))
CODES = np.stack([np.arange(N_ITEMS) // 3, np.arange(N_ITEMS) % 3], axis=1)  # a bijection item <-> codes

TINY = {
    "qwen3": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, attention_dropout=0.0),
    "gamer": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, behavior_embed_dim=8, injection_layers=[0],
                  cross_layers=[1], attention_dropout=0.0, resid_dropout=0.0),
    "tiger": dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4, dropout_rate=0.0),
    "mbgen": dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4, dropout_rate=0.0,
                  behavior_embed_dim=8, sparse_layers=[0], encoder_injection_layers=[0], decoder_injection_layers=[0]),
}  # fmt: skip
TINY |= {"gamer_session": TINY["gamer"], "tiger_mb": TINY["tiger"]} | {
    name: {**TINY["gamer"], "cross_layers": []} for name in ("qwen3_moe", "gamer_action_moe", "qwen3_session_moe")
} | {"qwen3_session": {**TINY["gamer"], "injection_layers": [], "cross_layers": []}}  # fmt: skip


def tiny_model(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, VOCAB, **{**TINY[name], **overrides})


def pattern_sequences(n_users: int = 32, seed: int = 0) -> pl.DataFrame:
    """Users walking the item catalogue in steps of +1 (mod N) with a repeating pv/cart/buy pattern and
    sessions of two events: a pattern a tiny model learns within a few epochs.  Split points as
    preprocessing stores them (both protocols)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        n = int(rng.integers(8, 12))
        start = int(rng.integers(N_ITEMS))
        items = [(start + t) % N_ITEMS for t in range(n)]
        behaviors = [(start + t) % 3 for t in range(n)]
        sessions = [t // 2 for t in range(n)]
        last = sessions[-1]
        rows.append({
            "user_idx": user, "item": items, "behavior": behaviors, "timestamp": list(range(n)),
            "session": sessions, "n_events": n, "n_sessions": last + 1,
            "last_event_valid": n - 2, "last_event_test": n - 1,
            "last_session_valid": sessions.index(last - 1), "last_session_test": sessions.index(last),
        })  # fmt: skip
    schema = {"user_idx": pl.Int32, "item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
              "timestamp": pl.List(pl.Int64), "session": pl.List(pl.Int32), "n_events": pl.Int32,
              "n_sessions": pl.Int32, "last_event_valid": pl.Int32, "last_event_test": pl.Int32,
              "last_session_valid": pl.Int32, "last_session_test": pl.Int32}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


class Marker:
    """A crafted pickle payload: unpickling it (``__reduce__``) creates the file ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def metric_failing_on_rank(context, *, rank: int):
    """A validation-metric factory (``launch`` job file) that raises on one rank: the way a real error in one
    rank of a launched job (bad data shard, out of memory) shows up, before that rank joins the collectives."""
    import os

    if int(os.environ["RANK"]) == rank:
        raise RuntimeError(f"injected failure on rank {rank}")
    return lambda model, epoch: 0.0
