"""Discriminative sequential-recommendation baselines (docs/design.md#discriminative-baselines).

Plain PyTorch modules, no Kedro. Tensor conventions are documented in ``base.py``; in short:
``items`` / ``behaviors`` are int64 [B, S] with index + 1 and 0 = padding, right-aligned
(left-padded; other paddings are re-aligned internally), targets are plain dense indices, and
``model.score(items, behaviors, target_behavior)`` returns logits over the full catalog
([B, n_items], column i = dense item i).

>>> model = build_discriminative("sasrec", n_items=1000, n_behaviors=3, max_len=50)
>>> loss = model.loss({"items": items, "behaviors": behaviors, "target_item": y, "target_behavior": b})
>>> scores, top = topk_items(model.score(items, behaviors, b), k=10)
"""

from .base import ClozeRecommender, SequentialRecommender, behavior_variant, topk_items
from .bert4rec import BERT4Rec
from .gru4rec import GRU4Rec
from .mbht import MBHT
from .mbstr import MBSTR
from .pbat import PBAT
from .registry import DISCRIMINATIVE_MODELS, build_discriminative
from .sasrec import SASRec

__all__ = [
    "BERT4Rec",
    "ClozeRecommender",
    "DISCRIMINATIVE_MODELS",
    "GRU4Rec",
    "MBHT",
    "MBSTR",
    "PBAT",
    "SASRec",
    "SequentialRecommender",
    "behavior_variant",
    "build_discriminative",
    "topk_items",
]
