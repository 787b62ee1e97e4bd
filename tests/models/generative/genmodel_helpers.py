"""Helpers of the generative-model tests: tiny models and synthetic item-block batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqrec_pipeline.models.generative import build_model
from seqrec_pipeline.vocab import TokenVocab

# Two behaviors share level 1, so "strictly lower level" is exercised, not just "different behavior".
BEHAVIORS = ("pv", "cart", "fav", "buy")
LEVELS = (0, 1, 1, 2)

# Tiny sizes: every test model builds in milliseconds.  GQA (4 query heads on 2 K/V heads) is kept on
# purpose, since the cross-level attention folds query heads into the query axis.
TINY = {
    "qwen3": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, attention_dropout=0.0),
    "gamer": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, behavior_embed_dim=8, injection_layers=[0, 1],
                  cross_layers=[1, 2], attention_dropout=0.0, resid_dropout=0.0),
    "tiger": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0),
    "mbgen": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0,
                  behavior_embed_dim=8, sparse_layers=[0, 1], encoder_injection_layers=[0],
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
# The decoder-only models, and those of them that read sessions.
DECODERS = ["qwen3", "gamer", "qwen3_session", "gamer_session", "qwen3_moe", "gamer_action_moe", "qwen3_session_moe"]
SESSION_MODELS = ["qwen3_session", "gamer_session", "qwen3_session_moe"]


def tiny_model(name: str, vocab: TokenVocab, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, vocab, **{**TINY[name], **overrides}).eval()


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slot: torch.Tensor
    behavior: torch.Tensor
    level: torch.Tensor
    labels: torch.Tensor
    session: torch.Tensor

    def inputs(self, with_labels: bool = False) -> dict[str, torch.Tensor]:
        names = ["input_ids", "attention_mask", "slot", "behavior", "level", "session"]
        names += ["labels"] if with_labels else []
        return {name: getattr(self, name) for name in names}

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(*(t[:, start:stop] for t in self.__dict__.values()))


def random_row(vocab: TokenVocab, n_items: int, generator: torch.Generator, behaviors: list[int] | None = None,
               sessions: list[int] | None = None):
    """Token ids and metadata of ``n_items`` item blocks ``[behavior, c_0, .., c_{L-1}]``; ``sessions``: session
    rank per item (default: two items per session)."""
    rows = {key: [] for key in ("input_ids", "slot", "behavior", "level", "labels", "session")}
    for item in range(n_items):
        b = behaviors[item] if behaviors else int(torch.randint(len(vocab.behaviors), (1,), generator=generator))
        codes = [int(torch.randint(size, (1,), generator=generator)) for size in vocab.level_sizes]
        code_tokens = [int(t) for t in vocab.code_tokens(torch.tensor(codes).numpy())]
        block = ([vocab.behavior_token(b)] if vocab.use_behavior_token else []) + code_tokens
        rows["input_ids"] += block
        rows["slot"] += list(range(len(block)))
        rows["behavior"] += [b] * len(block)
        rows["level"] += [LEVELS[b]] * len(block)
        rows["session"] += [sessions[item] if sessions else item // 2] * len(block)
        rows["labels"] += ([-100] if vocab.use_behavior_token else []) + code_tokens
    return rows


def make_batch(rows: list[dict], pad_side: str = "right") -> Batch:
    """Pad rows (dicts of lists, as from ``random_row``) to one batch; pads are 0 (labels -100)."""
    length = max(len(row["input_ids"]) for row in rows)
    out = {key: torch.zeros(len(rows), length, dtype=torch.long) for key in Batch.__dataclass_fields__}
    out["labels"].fill_(-100)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        where = slice(length - n, length) if pad_side == "left" else slice(0, n)
        for key, values in row.items():
            out[key][i, where] = torch.tensor(values)
        out["attention_mask"][i, where] = 1
    return Batch(**out)
