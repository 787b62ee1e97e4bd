"""SASRec (Kang & McAuley, ICDM'18): causal self-attention over the item history.

Sizes follow the reference configuration (github.com/wzf2000/GAMER): 2 layers, 2 heads,
hidden 128, inner 256, dropout 0.5, GELU,
learned absolute positions, causal mask, the last position is the sequence representation and
items are scored by a dot product with the shared item embeddings.

Simplifications / choices:
- Trained per sample (history -> next target, full-catalog CE) like the reference's ``smb_dis``
  samples by default; ``rec.sample_mode=sequence`` trains with a loss at every position (the paper's
  way, :meth:`~.base.SequentialRecommender.sequence_loss`).
- Positions are counted from the first real event of a row (not from column 0), so padding never
  shifts them and a prefix sees exactly the positions it has inside a longer row.
- Behaviors and ``target_behavior`` are ignored (single-behavior baseline); ``sasrec_behavior``
  (``base.behavior_variant``) adds behavior embeddings to the inputs and reads the requested behavior.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import SequentialRecommender
from .layers import TransformerBlock, attention_mask, init_weights, positions_from_start


class SASRec(SequentialRecommender):
    name = "sasrec"
    supports_sequence_loss = True

    def __init__(
        self,
        n_items: int,
        n_behaviors: int,
        max_len: int,
        *,
        hidden_size: int = 128,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.5,
        hidden_act: str = "gelu",
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)
        self.behavior_input = self.make_behavior_input(hidden_size)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, n_heads, inner_size, dropout, hidden_act) for _ in range(n_layers)
        )
        self.apply(init_weights)

    def encode(self, items: Tensor, behaviors: Tensor | None = None, query: Tensor | None = None) -> Tensor:
        """Right-aligned ``items`` [B, S<=max_len] -> hidden states [B, S, H]; position t only
        depends on events at positions <= t (``base.SequentialRecommender.encode``)."""
        valid = items != 0
        x = self.embed_events(items, behaviors, query) + self.position_embedding(positions_from_start(valid))
        x = self.dropout(self.norm(x))
        allowed = attention_mask(valid, causal=True)
        for block in self.blocks:
            x = block(x, allowed)
        return x
