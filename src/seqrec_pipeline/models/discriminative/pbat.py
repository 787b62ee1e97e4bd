"""PBAT (Su et al., 2023): Personalized Behavior-Aware Transformer.

Everything is a diagonal Gaussian (mean m, variance c > 0): items, behaviors, positions and
behavior-pair relations; distances between Gaussians are squared 2-Wasserstein distances,
W2^2 = |m1 - m2|^2 + |sqrt(c1) - sqrt(c2)|^2.

Core ideas kept:
1. Personalized behavior pattern generator: a user Gaussian is fused with every behavior
   Gaussian (self-adaptive Gaussian production, SAGP) into personalized behavior Gaussians P_b;
   the behavior-pair weights are -W2^2(P_a, P_b); a learned relation Gaussian per behavior pair is
   scaled by that weight.
2. Fused behavior-aware attention: the query of event i (item + behavior Gaussian) is fused with
   the relation Gaussian of the pair (b_i, b_j) and its position Gaussian (three-way SAGP); the key
   of event j likewise with the same relation and its own position; the attention score is
   -W2^2(query_ij, key_ij) / sqrt(d). Means and variances are aggregated with the same weights.
3. Behavior-specific feed-forward experts; each output is finally fused (SAGP) with the
   personalized Gaussian of the event's behavior (for the [MASK]: the requested target behavior).
4. Wasserstein prediction head: logits = -W2^2(sequence Gaussian, item Gaussian) over the catalog.
5. Cloze training (target appended and always masked; random history masking, ratio 0.2).
Sizes: the reference config (github.com/wzf2000/GAMER; 2 layers, 2 heads, hidden 64, inner 256, ELU,
dropout 0.2).

Simplifications / fixes:
- No user ids in the input contract: the "user" Gaussian is a learned projection of the mean
  item + behavior Gaussian of the history (excluding [MASK]s), so it is personalized from the
  history itself and works for unseen users.
- The reference builds each key from the *query's* event and position (keys indexed like
  queries); here key_ij uses event j, as the paper describes.
- The reference head returns +W2 distances as logits (ranking by dissimilarity); here -W2^2.
- Relation Gaussians are built for all behavior pairs at once (no Python double loop). The query
  of i for key j depends only on (i, b_j) and the key only on (j, b_i), so queries and keys are
  fused once per behavior ([B, S, nb+1, H]) instead of per event pair ([B, S, S, H] in the
  reference); the pairwise W2 is assembled from inner products (``pair_w2``): same values,
  without the per-pair hidden-size tensors.
- Positions count from the first real event (padding-invariant).
- ``forward`` returns the sequence Gaussian as [mean; variance] (``repr_dim`` = 2 * hidden).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ClozeRecommender
from .layers import BehaviorFeedForward, attention_mask, init_weights, masked_softmax, positions_from_start

_EPS = 1e-12


def positive(x: Tensor) -> Tensor:
    """Map an unconstrained tensor to a variance: ELU(x) + 1 > 0."""
    return F.elu(x) + 1


def sagp(m1: Tensor, c1: Tensor, m2: Tensor, c2: Tensor) -> tuple[Tensor, Tensor]:
    """Self-adaptive Gaussian production: the product-of-Gaussians mean, twice its variance
    (so that fusing two equal Gaussians returns the same Gaussian)."""
    c1, c2 = c1.clamp(min=_EPS), c2.clamp(min=_EPS)
    return (c2 * m1 + c1 * m2) / (c1 + c2), 2 * c1 * c2 / (c1 + c2)


def sagp3(m1, c1, m2, c2, m3, c3) -> tuple[Tensor, Tensor]:
    """Product of three Gaussians (precision-weighted mean, harmonic variance)."""
    p1, p2, p3 = 1 / c1.clamp(min=_EPS), 1 / c2.clamp(min=_EPS), 1 / c3.clamp(min=_EPS)
    c = 1 / (p1 + p2 + p3)
    return c * (m1 * p1 + m2 * p2 + m3 * p3), c


def w2_pairwise(m1: Tensor, c1: Tensor, m2: Tensor, c2: Tensor) -> Tensor:
    """Squared W2 between every row of (m1, c1) [..., N, H] and of (m2, c2) [..., K, H] -> [..., N, K]."""
    s1, s2 = c1.clamp(min=_EPS).sqrt(), c2.clamp(min=_EPS).sqrt()
    mean_part = (m1 * m1).sum(-1)[..., :, None] + (m2 * m2).sum(-1)[..., None, :] - 2 * m1 @ m2.transpose(-1, -2)
    cov_part = (s1 * s1).sum(-1)[..., :, None] + (s2 * s2).sum(-1)[..., None, :] - 2 * s1 @ s2.transpose(-1, -2)
    return (mean_part + cov_part).clamp(min=0)


class GaussianEmbedding(nn.Module):
    """Mean and variance tables; both go through LayerNorm + dropout, the variance through ELU+1."""

    def __init__(self, num: int, dim: int, dropout: float, padding_idx: int | None = 0):
        super().__init__()
        self.mean = nn.Embedding(num, dim, padding_idx=padding_idx)
        self.cov = nn.Embedding(num, dim, padding_idx=padding_idx)
        self.norm_mean = nn.LayerNorm(dim, eps=1e-12)
        self.norm_cov = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        m = self.dropout(self.norm_mean(self.mean(idx)))
        c = positive(self.dropout(self.norm_cov(self.cov(idx))))
        return m, c


def pair_w2(z_q: Tensor, z_k: Tensor, behaviors: Tensor) -> Tensor:
    """Squared W2 between query(i, b_j) and key(j, b_i) for every event pair -> [B, h, S, S].

    ``z_q`` / ``z_k`` [B, h, S, A, 2d] hold [mean; sqrt(variance)] of the query of event i fused
    for each possible key behavior a (resp. the key of j for each query behavior), A = nb + 1.
    W2^2 is then a squared Euclidean distance, expanded as |x|^2 + |y|^2 - 2<x, y> so that only
    [B, h, S, S, A, A] inner products are formed instead of per-pair Gaussians.
    """
    B, h, S, A, _ = z_q.shape
    b_key = behaviors[:, None, None, :].expand(B, h, S, S)  # [b, h, i, j] -> b_j
    sq_q = (z_q * z_q).sum(-1).gather(-1, b_key)  # |q(i, b_j)|^2
    sq_k = (z_k * z_k).sum(-1).gather(-1, b_key).transpose(-1, -2)  # |k(j, b_i)|^2
    cross = torch.einsum("bhiad,bhjcd->bhijac", z_q, z_k).flatten(-2)  # [B, h, S, S, A*A]
    pick = (behaviors[:, None, None, :] * A + behaviors[:, None, :, None]).expand(B, h, S, S)
    cross = cross.gather(-1, pick[..., None]).squeeze(-1)  # <q(i, b_j), k(j, b_i)>
    return (sq_q + sq_k - 2 * cross).clamp(min=0)


class FusedBehaviorAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        # q/k/v from the item Gaussian plus q/k/v from the behavior Gaussian (means, variances).
        self.item_mean, self.item_cov = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, 3 * hidden)
        self.beh_mean, self.beh_cov = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, 3 * hidden)
        # Transforms of the relation and position means before fusion into queries / keys.
        self.rel_q, self.rel_k = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.pos_q, self.pos_k = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out_mean, self.out_cov = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)
        self.norm_mean = nn.LayerNorm(hidden, eps=1e-12)
        self.norm_cov = nn.LayerNorm(hidden, eps=1e-12)

    def heads(self, x: Tensor) -> Tensor:
        """[B, S, ..., H] -> [B, h, S, ..., d]."""
        return x.unflatten(-1, (self.n_heads, -1)).movedim(-2, 1)

    def fused(self, m, c, rel_m, rel_c, pos_m, pos_c) -> Tensor:
        """Three-way SAGP of event, relation and position Gaussians -> heads of [mean; sqrt(var)]."""
        fm, fc = sagp3(m[:, :, None], c[:, :, None], rel_m, rel_c, pos_m[:, :, None], pos_c[:, :, None])
        return torch.cat([self.heads(fm), self.heads(fc.clamp(min=_EPS).sqrt())], dim=-1)

    def distances(self, q_m, q_c, k_m, k_c, behaviors, rel_m, rel_c, pos_m, pos_c) -> Tensor:
        """Squared W2 per head between fused query and key Gaussians, [B, h, S, S], where
        query_ij = SAGP3(q_i, relation(b_i, b_j), position_i) and
        key_ij = SAGP3(k_j, relation(b_i, b_j), position_j).

        q_*, k_*, pos_*: [B, S, H]; rel_*: table [B, A, A, H] indexed [query behavior, key
        behavior] (A = nb + 1, 0 = padding).
        """
        # query_ij only depends on (i, b_j): fuse it once per possible key behavior. Likewise
        # key_ij only depends on (j, b_i).
        rows = torch.arange(q_m.size(0), device=q_m.device)[:, None]
        rel_for_q = self.rel_q(rel_m)[rows, behaviors], rel_c[rows, behaviors]  # [B, S, A, H]
        rel_for_k = (
            self.rel_k(rel_m).transpose(1, 2)[rows, behaviors],  # relation(c, b_j) for every c
            rel_c.transpose(1, 2)[rows, behaviors],
        )
        z_q = self.fused(q_m, q_c, *rel_for_q, self.pos_q(pos_m), pos_c)  # [B, h, S, A, 2d]
        z_k = self.fused(k_m, k_c, *rel_for_k, self.pos_k(pos_m), pos_c)
        return pair_w2(z_q, z_k, behaviors)

    def forward(self, x_m, x_c, behaviors, beh_m, beh_c, rel_m, rel_c, pos_m, pos_c, allowed):
        """x_*, beh_*, pos_*: [B, S, H]; rel_*: relation tables [B, A, A, H]. -> new (x_m, x_c)."""
        q_m, k_m, v_m = (self.item_mean(x_m) + self.beh_mean(beh_m)).chunk(3, -1)
        q_c, k_c, v_c = positive(self.item_cov(x_c) + self.beh_cov(beh_c)).chunk(3, -1)
        w2 = self.distances(q_m, q_c, k_m, k_c, behaviors, rel_m, rel_c, pos_m, pos_c)
        d = q_m.size(-1) // self.n_heads
        probs = masked_softmax(-w2 / math.sqrt(d), allowed, self.dropout, self.training)

        ctx_m = (probs @ self.heads(v_m)).movedim(1, -2).flatten(-2)
        ctx_c = (probs @ self.heads(v_c)).movedim(1, -2).flatten(-2)
        new_m = self.norm_mean(x_m + self.out_dropout(self.out_mean(ctx_m)))
        new_c = self.norm_cov(x_c + self.out_dropout(self.out_cov(ctx_c)))
        return new_m, new_c


class PBATLayer(nn.Module):
    def __init__(self, hidden, n_heads, inner, n_behaviors, dropout, act):
        super().__init__()
        self.attn = FusedBehaviorAttention(hidden, n_heads, dropout)
        self.ffn = BehaviorFeedForward(hidden, inner, n_behaviors, dropout, act)

    def forward(self, x_m, x_c, behaviors, **ctx) -> tuple[Tensor, Tensor]:
        x_m, x_c = self.attn(x_m, x_c, behaviors, **ctx)
        # One set of behavior experts for both moments (as in the reference); variances stay > 0.
        return self.ffn(x_m, behaviors), positive(self.ffn(x_c, behaviors))


class PBAT(ClozeRecommender):
    name = "pbat"
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
        hidden_act: str = "elu",
        mask_ratio: float = 0.2,
        ft_ratio: float = 0.0,
        default_target_behavior: int | None = None,
        loss_type: str = "ce",
    ):
        super().__init__(
            n_items, n_behaviors, max_len, mask_ratio=mask_ratio, ft_ratio=ft_ratio,
            default_target_behavior=default_target_behavior, loss_type=loss_type,
        )
        self.hidden_size = hidden_size
        self.item = GaussianEmbedding(n_items + 2, hidden_size, dropout)  # + [MASK]
        self.behavior = GaussianEmbedding(n_behaviors + 1, hidden_size, dropout)
        self.position = GaussianEmbedding(max_len + 1, hidden_size, dropout, padding_idx=None)
        # One relation Gaussian per ordered behavior pair (row 0 = a pair involving padding).
        self.relation_mean = nn.Embedding(n_behaviors * n_behaviors + 1, hidden_size, padding_idx=0)
        self.relation_cov = nn.Embedding(n_behaviors * n_behaviors + 1, hidden_size, padding_idx=0)
        b = torch.arange(n_behaviors + 1)
        pair = torch.where((b[:, None] > 0) & (b[None, :] > 0), (b[:, None] - 1) * n_behaviors + b[None, :], 0)
        self.register_buffer("pair_index", pair, persistent=False)  # [nb+1, nb+1]
        # Personalized behavior pattern generator.
        self.user_mean, self.user_cov = nn.Linear(hidden_size, hidden_size), nn.Linear(hidden_size, hidden_size)
        self.behavior_to_user = nn.Linear(hidden_size, hidden_size)
        self.pattern_to_output = nn.Linear(hidden_size, hidden_size)
        self.layers = nn.ModuleList(
            PBATLayer(hidden_size, n_heads, inner_size, n_behaviors, dropout, hidden_act) for _ in range(n_layers)
        )
        self.head_mean, self.head_cov = nn.Linear(hidden_size, hidden_size), nn.Linear(hidden_size, hidden_size)
        self.apply(init_weights)

    @property
    def repr_dim(self) -> int:
        return 2 * self.hidden_size

    def behavior_patterns(self, seq_items: Tensor, item_m: Tensor, item_c: Tensor, beh_m: Tensor, beh_c: Tensor):
        """Personalized behavior Gaussians P [B, nb+1, H] and pair relations [B, nb+1, nb+1, H]."""
        events = ((seq_items != 0) & (seq_items != self.mask_token))[..., None].to(item_m.dtype)
        count = events.sum(1).clamp(min=1)
        user_m = self.user_mean(((item_m + beh_m) * events).sum(1) / count)
        user_c = positive(self.user_cov(((item_c + beh_c) * events).sum(1) / count))

        all_m, all_c = self.behavior(torch.arange(self.n_behaviors + 1, device=seq_items.device))
        P_m, P_c = sagp(user_m[:, None], user_c[:, None], self.behavior_to_user(all_m)[None], all_c[None])
        pair_weight = -w2_pairwise(P_m, P_c, P_m, P_c)[..., None]  # [B, nb+1, nb+1, 1]
        rel_m = pair_weight * self.relation_mean(self.pair_index)
        rel_c = positive(pair_weight * self.relation_cov(self.pair_index))
        return P_m, P_c, rel_m, rel_c

    def encode(self, seq_items: Tensor, seq_behaviors: Tensor) -> Tensor:
        valid = seq_items != 0
        item_m, item_c = self.item(seq_items)
        beh_m, beh_c = self.behavior(seq_behaviors)
        pos_m, pos_c = self.position(positions_from_start(valid))
        P_m, P_c, rel_m, rel_c = self.behavior_patterns(seq_items, item_m, item_c, beh_m, beh_c)

        ctx = dict(
            beh_m=beh_m, beh_c=beh_c, pos_m=pos_m, pos_c=pos_c, rel_m=rel_m, rel_c=rel_c,
            allowed=attention_mask(valid, causal=False),
        )
        x_m, x_c = item_m, item_c
        for layer in self.layers:
            x_m, x_c = layer(x_m, x_c, seq_behaviors, **ctx)

        # Fuse with the personalized Gaussian of the event's behavior ([MASK]: target behavior).
        own = torch.arange(seq_items.size(0), device=seq_items.device)[:, None], seq_behaviors
        x_m, x_c = sagp(x_m, x_c, self.pattern_to_output(P_m[own]), P_c[own])
        return torch.cat([x_m, x_c], dim=-1)

    def head(self, rep: Tensor, target_behavior: Tensor) -> Tensor:
        m, c = rep.split(self.hidden_size, dim=-1)
        m, c = self.head_mean(m), positive(self.head_cov(c))
        items = slice(1, self.n_items + 1)
        item_m, item_c = self.item.mean.weight[items], positive(self.item.cov.weight[items])
        return -w2_pairwise(m, c, item_m, item_c)
