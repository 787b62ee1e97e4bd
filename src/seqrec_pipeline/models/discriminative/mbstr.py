"""MB-STR (Yuan et al., SIGIR'22): Multi-Behavior Sequential Transformer Recommender.

Core ideas kept:
1. Behavior-aware multi-head attention (MB-Trans):
   - behavior-specific query/key/value projections (each event is projected with the weights of
     its own behavior);
   - behavior-pair-specific attention: score(i, j) = q_i^T W[b_i, b_j] k_j and the value of j is
     transformed by V[b_i, b_j]. As in the reference, each pair's matrix is a softmax mixture of
     ``n_behaviors`` shared basis matrices (per head), which keeps the parameters O(B) instead of
     O(B^2) and lets us compute one score map per *basis* rather than per pair;
   - behavior-pair-specific relative position bias with T5-style log buckets
     (32 buckets, max distance 40).
2. Behavior-specific feed-forward experts (each event goes through its behavior's FFN).
3. Multi-behavior prediction (MB-Pred): a CGC/PLE-style mixture of 3 shared + 1 behavior-specific
   linear experts, gated per target behavior, then a dot product with the item embeddings.
4. Cloze training (target appended and always masked; random history masking, ratio 0.2); at
   inference a [MASK] carrying the requested target behavior is appended and read out.
Sizes: the reference config (github.com/wzf2000/GAMER; 2 layers, 2 heads, hidden 64, inner 256,
ReLU, dropout 0.2).

Simplifications / choices:
- No absolute positions, like the reference: order enters only through the relative bias, which
  is padding-invariant by construction.
- Basis matrices start at the identity (plus noise) rather than the reference's unit-variance
  random matrices, so initial attention is ordinary dot-product attention; the prediction head's
  linear experts start at the identity too, so the initial head is the plain dot product.
- Padding (behavior 0) has its own, unused projection row; padding keys are masked anyway.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import ClozeRecommender
from .layers import BehaviorFeedForward, attention_mask, init_weights, masked_softmax, relative_position_bucket


class BehaviorAwareAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, n_behaviors: int, dropout: float, n_buckets: int):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of n_heads {n_heads}")
        d = hidden // n_heads
        n_pairs = n_behaviors * n_behaviors + 1  # pair id 0 = involves padding
        self.n_heads, self.n_behaviors, self.n_buckets = n_heads, n_behaviors, n_buckets
        # Behavior-specific q/k/v projections (row 0 = padding).
        self.qkv = nn.Parameter(torch.randn(n_behaviors + 1, hidden, 3 * hidden) * 0.02)
        self.qkv_bias = nn.Parameter(torch.zeros(n_behaviors + 1, 3 * hidden))
        # Pair-specific bilinear forms as mixtures of per-head basis matrices.
        eye = torch.eye(d).expand(n_behaviors, n_heads, d, d)
        self.score_basis = nn.Parameter(eye + torch.randn(n_behaviors, n_heads, d, d) * 0.02)
        self.value_basis = nn.Parameter(eye + torch.randn(n_behaviors, n_heads, d, d) * 0.02)
        self.score_mix = nn.Parameter(torch.randn(n_pairs, n_behaviors, n_heads) * 0.02)
        self.value_mix = nn.Parameter(torch.randn(n_pairs, n_behaviors, n_heads) * 0.02)
        self.position_bias = nn.Embedding(n_pairs * n_buckets, n_heads)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: Tensor, behaviors: Tensor, allowed: Tensor, buckets: Tensor) -> Tensor:
        B, S, H = x.shape
        h, d = self.n_heads, H // self.n_heads
        # Project with every behavior's weights, keep each event's own behavior.
        proj = torch.einsum("bsh,nhk->bsnk", x, self.qkv) + self.qkv_bias
        index = behaviors[..., None, None].expand(-1, -1, 1, 3 * H)
        q, k, v = (t.view(B, S, h, d).transpose(1, 2) for t in proj.gather(2, index).squeeze(2).chunk(3, -1))

        nb = self.n_behaviors
        both = (behaviors[:, :, None] > 0) & (behaviors[:, None, :] > 0)
        pair = torch.where(both, (behaviors[:, :, None] - 1) * nb + behaviors[:, None, :], 0)  # [B, S, S]

        # q_i^T (sum_n a_n[pair] W_n) k_j = sum_n a_n[pair] (q_i^T W_n k_j): one map per basis.
        per_basis = torch.einsum("bhid,nhde,bhje->bhijn", q, self.score_basis, k)
        score_mix = self.score_mix.softmax(1)[pair]  # [B, S, S, n, h]
        scores = torch.einsum("bhijn,bijnh->bhij", per_basis, score_mix) / math.sqrt(d)
        bias = self.position_bias(pair * self.n_buckets + buckets).permute(0, 3, 1, 2)
        probs = masked_softmax(scores + bias, allowed, self.dropout, self.training)

        # sum_j p_ij (sum_n c_n[pair] V_n) v_j, again one pass per basis.
        value_per_basis = torch.einsum("nhed,bhjd->bhjne", self.value_basis, v)
        value_mix = self.value_mix.softmax(1)[pair]
        ctx = torch.einsum("bhij,bijnh,bhjne->bhie", probs, value_mix, value_per_basis)
        ctx = ctx.transpose(1, 2).reshape(B, S, H)
        return self.norm(x + self.out_dropout(self.out(ctx)))


class MBSTRLayer(nn.Module):
    def __init__(self, hidden, n_heads, inner, n_behaviors, dropout, act, n_buckets):
        super().__init__()
        self.attn = BehaviorAwareAttention(hidden, n_heads, n_behaviors, dropout, n_buckets)
        self.ffn = BehaviorFeedForward(hidden, inner, n_behaviors, dropout, act)

    def forward(self, x: Tensor, behaviors: Tensor, allowed: Tensor, buckets: Tensor) -> Tensor:
        return self.ffn(self.attn(x, behaviors, allowed, buckets), behaviors)


class BehaviorMoEHead(nn.Module):
    """CGC head: shared + behavior-specific linear experts mixed by a per-behavior gate."""

    def __init__(self, hidden: int, n_behaviors: int, n_shared: int, n_specific: int):
        super().__init__()
        # Experts start at the identity (plus noise), so the head starts as the plain dot product: with
        # N(0, 0.02) experts the initial logits are far too small and training barely moves (it stays below
        # popularity).
        eye = torch.eye(hidden)
        self.shared = nn.Parameter(eye + torch.randn(n_shared, hidden, hidden) * 0.02)
        self.shared_bias = nn.Parameter(torch.zeros(n_shared, hidden))
        self.specific = nn.Parameter(eye + torch.randn(n_behaviors, n_specific, hidden, hidden) * 0.02)
        self.specific_bias = nn.Parameter(torch.zeros(n_behaviors, n_specific, hidden))
        self.gate = nn.Parameter(torch.randn(n_behaviors, hidden, n_shared + n_specific) * 0.02)

    def forward(self, rep: Tensor, behavior: Tensor) -> Tensor:
        shared = torch.einsum("mh,ehk->mek", rep, self.shared) + self.shared_bias
        specific = torch.einsum("mh,mehk->mek", rep, self.specific[behavior]) + self.specific_bias[behavior]
        experts = torch.cat([shared, specific], dim=1)  # [M, E, H]
        gates = torch.einsum("mh,mhe->me", rep, self.gate[behavior]).softmax(-1)
        return (gates[..., None] * experts).sum(1)


class MBSTR(ClozeRecommender):
    name = "mbstr"
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
        hidden_act: str = "relu",
        num_buckets: int = 32,
        max_distance: int = 40,
        n_shared_experts: int = 3,
        n_specific_experts: int = 1,
        mask_ratio: float = 0.2,
        ft_ratio: float = 0.0,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len, mask_ratio=mask_ratio, ft_ratio=ft_ratio,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.item_embedding = nn.Embedding(n_items + 2, hidden_size, padding_idx=0)  # + [MASK]
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            MBSTRLayer(hidden_size, n_heads, inner_size, n_behaviors, dropout, hidden_act, num_buckets)
            for _ in range(n_layers)
        )
        self.moe_head = BehaviorMoEHead(hidden_size, n_behaviors, n_shared_experts, n_specific_experts)
        self.apply(init_weights)

    def encode(self, seq_items: Tensor, seq_behaviors: Tensor) -> Tensor:
        valid = seq_items != 0
        S = seq_items.size(1)
        idx = torch.arange(S, device=seq_items.device)
        buckets = relative_position_bucket(idx[None, :] - idx[:, None], self.num_buckets, self.max_distance)
        allowed = attention_mask(valid, causal=False)
        x = self.dropout(self.item_embedding(seq_items))
        for layer in self.layers:
            x = layer(x, seq_behaviors, allowed, buckets[None])
        return x

    def head(self, rep: Tensor, target_behavior: Tensor) -> Tensor:
        return self.moe_head(rep, target_behavior) @ self.item_embedding.weight[1 : self.n_items + 1].T
