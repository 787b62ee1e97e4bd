"""MBHT (Yang et al., KDD'22): Multi-Behavior Hypergraph-enhanced Transformer.

Core ideas kept:
1. Behavior-aware context embedding: item + behavior-type + position embeddings.
2. Multi-scale transformer: each event attends to the events at fine granularity and to pooled
   segments of the sequence at coarser granularities (``scales``), fused per event.
3. Item hypergraph over the sequence, encoded by a 2-layer HGNN (G = Dv^-1 H De^-1 H^T):
   - item-wise semantic hyperedges: an event joins the edge of each of its ``hyper_len`` most
     similar items in the sequence (cosine of gated, metric-weighted item embeddings), weighted
     by the similarity, plus a self-loop on its own item's edge;
   - item-wise multi-behavior hyperedges: all events of an item that occurs several times
     (typically with different behaviors) share one edge.
   A [MASK] has no item, so its hypergraph view is the mean of the HGNN outputs of the events in
   a window around it (10 before, 5 after), as in the reference.
4. Attention fusion of the transformer view and the hypergraph view, cloze training (target
   appended and always masked, random history masking with ``mask_ratio``), dot-product scoring.
Sizes: the reference configuration (github.com/wzf2000/GAMER; 2 layers, 2 heads, hidden 64,
hyper_len 6); inner 256, GELU;
dropout 0.2 (not given by the reference config; same as MB-STR/PBAT).

Simplifications (reduced cost, fully batched, padding-invariant):
- The reference's multi-scale layer uses a Linformer-style low-rank projection over absolute
  positions (scales[0] = 5) and mixes the scales with a linear map over absolute positions. Here the
  fine scale is exact attention and each coarse scale s is attention to mean-pooled windows of s
  events anchored at the most recent event; the scale outputs are concatenated per event and
  projected. ``scales`` therefore lists only the pooling sizes (reference [5, 4, 20] -> (4, 20)).
- Hypergraphs are built densely per batch ([B, S, S] tensors, no Python loop, no block-diagonal
  matrix); edges are indexed by the first occurrence of each item. [MASK] and padding are not
  nodes (the reference lets all [MASK]s share one "mask item" edge).
- The [MASK] embedding carries the requested target behavior (the reference gives masks
  behavior 0), which makes MBHT answer behavior-specific queries like MB-STR and PBAT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ClozeRecommender
from .layers import (
    FeedForward,
    attention_mask,
    init_weights,
    masked_attention,
    positions_from_start,
)


def pool_windows(x: Tensor, valid: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Mean of the real events in windows of ``size`` columns counted from the right end.

    Returns pooled [B, W, H] and window validity [B, W]. Anchoring at the most recent event keeps
    windows identical whatever the amount of left padding.
    """
    S = x.size(1)
    n_windows = -(-S // size)
    window = (S - 1 - torch.arange(S, device=x.device)) // size
    assign = F.one_hot(window, n_windows).to(x.dtype)[None] * valid[..., None].to(x.dtype)  # [B, S, W]
    counts = assign.sum(1)  # [B, W]
    pooled = torch.einsum("bsw,bsh->bwh", assign, x) / counts.clamp(min=1)[..., None]
    return pooled, counts > 0


class MultiScaleAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, scales: tuple[int, ...], dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.scales = tuple(scales)
        self.query = nn.Linear(hidden, hidden)
        # One key/value projection per granularity: fine events, then each pooling size.
        self.key_value = nn.ModuleList(nn.Linear(hidden, 2 * hidden) for _ in range(1 + len(self.scales)))
        self.fuse = nn.Linear((1 + len(self.scales)) * hidden, hidden)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def split_heads(self, x: Tensor) -> Tensor:
        B, S, H = x.shape
        return x.view(B, S, self.n_heads, H // self.n_heads).transpose(1, 2)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        q = self.split_heads(self.query(x))
        sources = [(x, attention_mask(valid, causal=False))]
        for size in self.scales:
            pooled, pooled_valid = pool_windows(x, valid, size)
            sources.append((pooled, pooled_valid[:, None, None, :]))
        contexts = []
        for (keys_in, allowed), proj in zip(sources, self.key_value):
            k, v = (self.split_heads(t) for t in proj(keys_in).chunk(2, dim=-1))
            ctx = masked_attention(q, k, v, allowed, dropout=self.dropout, training=self.training)
            contexts.append(ctx.transpose(1, 2).reshape(x.shape))
        return self.norm(x + self.out_dropout(self.fuse(torch.cat(contexts, dim=-1))))


class SequenceHypergraph(nn.Module):
    """Per-sequence item hypergraph (semantic + multi-behavior edges) and a 2-layer HGNN."""

    def __init__(self, hidden: int, hyper_len: int, dropout: float, window: tuple[int, int] = (10, 5)):
        super().__init__()
        self.hyper_len = hyper_len
        self.window = window
        self.gate = nn.Linear(hidden, hidden)
        self.metric = nn.Parameter(torch.ones(hidden))
        self.conv1 = nn.Linear(hidden, hidden)
        self.conv2 = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def propagation(self, x: Tensor, items: Tensor, node: Tensor) -> Tensor:
        """G = Dv^-1 H De^-1 H^T over the sequence, [B, S, S]; rows/cols of non-nodes are 0."""
        B, S, _ = x.shape
        pair = node[:, :, None] & node[:, None, :]
        xm = F.normalize(x * self.metric, dim=-1)
        sim = xm @ xm.transpose(1, 2)
        sim = torch.where(sim < 0, torch.full_like(sim, 0.01), sim)  # keep weak links positive

        # Semantic edges. Membership of event i in the edge of the item at column j: sim(i, j) if
        # j is among i's top-k most similar events.
        top = sim.masked_fill(~pair, float("-inf")).topk(min(self.hyper_len, S), dim=-1).indices
        in_top = torch.zeros_like(pair).scatter(2, top, True) & pair
        same = (items[:, :, None] == items[:, None, :]) & pair  # same item, both real events
        first = node & ~(same & torch.ones(S, S, dtype=torch.bool, device=x.device).tril(-1)).any(-1)
        same_f = same.to(x.dtype)
        # One edge per distinct item (column = its first occurrence). Occurrences of one item have
        # identical embeddings, hence identical similarities: averaging them recovers that value.
        semantic = (sim * in_top) @ same_f / (in_top.to(x.dtype) @ same_f).clamp(min=1)
        semantic = torch.where(same, torch.ones_like(semantic), semantic)  # self-loop
        semantic = semantic * first[:, None, :]
        # Multi-behavior edges: all occurrences of an item seen more than once.
        repeated = first & (same.sum(1) > 1)
        multi = same_f * repeated[:, None, :]

        incidence = torch.cat([semantic, multi], dim=-1)  # [B, S nodes, 2S edges]
        edge_degree = incidence.sum(1, keepdim=True).clamp(min=1e-12)
        node_degree = incidence.sum(2, keepdim=True).clamp(min=1e-12)
        return (incidence / edge_degree) @ incidence.transpose(1, 2) / node_degree

    def forward(self, item_emb: Tensor, items: Tensor, node: Tensor, is_mask: Tensor) -> Tensor:
        x = item_emb * torch.sigmoid(self.gate(item_emb))
        G = self.propagation(x, items, node)
        h1 = self.dropout(G @ self.conv1(x))
        h2 = self.dropout(G @ self.conv2(h1))
        out = (h1 + h2) / 2

        # A [MASK] reads out the mean hypergraph embedding of the events around it.
        S = items.size(1)
        idx = torch.arange(S, device=items.device)
        rel = idx[None, :] - idx[:, None]  # key column - query column
        before, after = self.window
        near = ((rel >= -before) & (rel < 0)) | ((rel > 0) & (rel <= after))
        weights = (near[None] & node[:, None, :]).to(out.dtype)
        readout = weights @ out / weights.sum(-1, keepdim=True).clamp(min=1)
        return torch.where(is_mask[..., None], readout, out)


class MBHTLayer(nn.Module):
    def __init__(self, hidden: int, n_heads: int, inner: int, scales: tuple[int, ...], dropout: float, act: str):
        super().__init__()
        self.attn = MultiScaleAttention(hidden, n_heads, scales, dropout)
        self.ffn = FeedForward(hidden, inner, dropout, act)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.ffn(self.attn(x, valid))


class MBHT(ClozeRecommender):
    name = "mbht"
    behavior_aware = True

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
        hyper_len: int = 6,
        scales: tuple[int, ...] = (4, 20),
        mask_ratio: float = 0.2,
        ft_ratio: float = 0.0,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len, mask_ratio=mask_ratio, ft_ratio=ft_ratio,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        self.item_embedding = nn.Embedding(n_items + 2, hidden_size, padding_idx=0)  # + [MASK]
        self.behavior_embedding = nn.Embedding(n_behaviors + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len + 1, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            MBHTLayer(hidden_size, n_heads, inner_size, tuple(scales), dropout, hidden_act) for _ in range(n_layers)
        )
        self.hypergraph = SequenceHypergraph(hidden_size, hyper_len, dropout)
        # Fusion of the two views: softmax over views of <W x, a>.
        self.fuse_weight = nn.Parameter(torch.randn(hidden_size, hidden_size) * 0.02)
        self.fuse_query = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.apply(init_weights)

    def encode(self, seq_items: Tensor, seq_behaviors: Tensor) -> Tensor:
        valid = seq_items != 0
        is_mask = seq_items == self.mask_token
        item_emb = self.item_embedding(seq_items)
        x = item_emb + self.behavior_embedding(seq_behaviors) + self.position_embedding(positions_from_start(valid))
        x = self.dropout(self.norm(x))
        for layer in self.layers:
            x = layer(x, valid)

        graph = self.hypergraph(item_emb, seq_items, valid & ~is_mask, is_mask)
        views = torch.stack([x, graph])  # [2, B, S, H]
        weights = ((views @ self.fuse_weight) * self.fuse_query).sum(-1).softmax(0)
        return (views * weights[..., None]).sum(0)
