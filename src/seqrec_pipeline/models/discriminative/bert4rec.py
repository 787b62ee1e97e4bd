"""BERT4Rec (Sun et al., CIKM'19): bidirectional self-attention trained by masked item prediction.

Sizes follow the reference configuration (github.com/wzf2000/GAMER): 2 layers, 2 heads,
hidden 64, inner 256, dropout 0.2, GELU,
mask ratio 0.2, ft_ratio 0.5 (half of the rows mask only the final item, the "fine-tuning"
share of the reference), full-catalog CE. Inference appends a [MASK] after the history and reads
its output (see ``base.ClozeRecommender``).

Simplifications / choices:
- The appended target is masked in every row (the reference masks it only in the ft rows and
  otherwise with probability mask_ratio); random history masking is unchanged.
- Output layer as in the paper: dense + GELU + LayerNorm, dot product with the shared item
  embeddings plus a per-item bias.
- Positions are counted from the first real event (padding-invariant). Behaviors and
  ``target_behavior`` are ignored (single-behavior baseline); ``bert4rec_behavior``
  (``base.behavior_variant``) adds behavior embeddings to the inputs, the [MASK] carrying the requested one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ClozeRecommender
from .layers import TransformerBlock, activation, attention_mask, init_weights, positions_from_start


class BERT4Rec(ClozeRecommender):
    name = "bert4rec"

    def __init__(
        self,
        n_items: int,
        n_behaviors: int,
        max_len: int,
        *,
        hidden_size: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.2,
        hidden_act: str = "gelu",
        mask_ratio: float = 0.2,
        ft_ratio: float = 0.5,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len, mask_ratio=mask_ratio, ft_ratio=ft_ratio,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        self.item_embedding = nn.Embedding(n_items + 2, hidden_size, padding_idx=0)  # + [MASK]
        self.behavior_input = self.make_behavior_input(hidden_size)
        self.position_embedding = nn.Embedding(max_len + 1, hidden_size)  # history + [MASK]
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, n_heads, inner_size, dropout, hidden_act) for _ in range(n_layers)
        )
        self.transform = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), activation(hidden_act), nn.LayerNorm(hidden_size, eps=1e-12)
        )
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.apply(init_weights)

    def encode(self, seq_items: Tensor, seq_behaviors: Tensor) -> Tensor:
        valid = seq_items != 0
        x = self.embed_events(seq_items, seq_behaviors) + self.position_embedding(positions_from_start(valid))
        x = self.dropout(self.norm(x))
        allowed = attention_mask(valid, causal=False)
        for block in self.blocks:
            x = block(x, allowed)
        return x

    def head(self, rep: Tensor, target_behavior: Tensor) -> Tensor:
        return self.transform(rep) @ self.item_embedding.weight[1 : self.n_items + 1].T + self.output_bias
