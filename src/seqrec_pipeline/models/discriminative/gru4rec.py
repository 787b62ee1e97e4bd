"""GRU4Rec (Hidasi et al., ICLR'16; the RecBole variant): item embedding -> GRU -> last state.

Sizes follow the reference configuration (github.com/wzf2000/GAMER): embedding 64, hidden 128,
1 layer, dropout 0.3 on the embeddings.
The last GRU output is projected back to the embedding size and scored against the shared item
embeddings (as in RecBole), trained per sample with full-catalog CE (no session-parallel
mini-batches, no sampled TOP1/BPR-max losses of the original paper).

The GRU runs on left-aligned rows (real events first) so that its state never passes through
padding: outputs at real steps are exact and trailing padding cannot influence them, with no
pack/unpack and no host sync. Behaviors and ``target_behavior`` are ignored; ``gru4rec_behavior``
(``base.behavior_variant``) adds behavior embeddings to the inputs and reads the requested behavior.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import SequentialRecommender
from .layers import left_align, undo_left_align


class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    supports_sequence_loss = True

    def __init__(
        self,
        n_items: int,
        n_behaviors: int,
        max_len: int,
        *,
        embedding_size: int = 64,
        hidden_size: int = 128,
        n_layers: int = 1,
        dropout: float = 0.3,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=0)
        self.behavior_input = self.make_behavior_input(embedding_size)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, n_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_size)
        # RecBole's initialisation: xavier-normal item embeddings, xavier-uniform GRU weights, torch's default
        # for the output projection.  BERT-style N(0, 0.02) everywhere makes the initial logits far too small
        # and training at lr 1e-3 barely moves (it stays below popularity).
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)

    def encode(self, items: Tensor, behaviors: Tensor | None = None, query: Tensor | None = None) -> Tensor:
        """Right-aligned ``items`` [B, S] -> per-step outputs [B, S, E] (zeros on padding)."""
        valid = items != 0
        # An empty history runs the GRU over one padding step (a zero vector): a learned
        # "no history" state instead of a special case.
        lengths = valid.sum(1).clamp(min=1)
        x = self.emb_dropout(self.embed_events(items, behaviors, query))
        out, _ = self.gru(left_align(x, lengths))
        out = undo_left_align(self.dense(out), lengths)
        S = items.size(1)
        keep = torch.arange(S, device=items.device)[None, :] >= (S - lengths)[:, None]
        return out * keep[..., None]
