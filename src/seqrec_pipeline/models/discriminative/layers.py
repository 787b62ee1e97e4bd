"""Building blocks shared by the discriminative baselines.

Everything here works on *right-aligned* sequences (padding on the left, the most recent event in
the last column), which is the canonical layout of this package; see ``base.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None


# --------------------------------------------------------------------------- sequence layout


def right_align(items: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Move the non-padding entries of every row to the right end, keeping their order.

    Callers may pad on either side (or both); after this every model sees the same layout, so the
    amount and side of padding can never change a prediction. ``others`` are gathered alongside
    (behaviors, levels) and zeroed where ``items`` is padding.
    """
    valid = items != 0
    # A stable sort of the 0/1 validity flags puts padding first and keeps the event order.
    order = torch.sort(valid.to(torch.int8), dim=1, stable=True).indices
    items = items.gather(1, order)
    valid = valid.gather(1, order)
    aligned = [o.gather(1, order).masked_fill(~valid, 0) for o in others]
    return (items, *aligned)


def positions_from_start(valid: Tensor) -> Tensor:
    """0 for the first real event of a right-aligned row, 1 for the next, ...; 0 on padding.

    Counting from the first event (not from column 0) makes learned position embeddings
    independent of the padding, and a prefix gets exactly the positions it has in the full row.
    """
    return (valid.long().cumsum(1) - 1).clamp(min=0)


def left_align(x: Tensor, lengths: Tensor) -> Tensor:
    """Right-aligned ``x`` [B, S, ...] -> left-aligned (real events first), e.g. for packed RNNs."""
    S = x.size(1)
    idx = (torch.arange(S, device=x.device)[None, :] + (S - lengths)[:, None]) % S
    return _gather_time(x, idx)


def undo_left_align(x: Tensor, lengths: Tensor) -> Tensor:
    """Inverse of :func:`left_align`."""
    S = x.size(1)
    idx = (torch.arange(S, device=x.device)[None, :] + lengths[:, None]) % S
    return _gather_time(x, idx)


def _gather_time(x: Tensor, idx: Tensor) -> Tensor:
    if x.dim() == 2:
        return x.gather(1, idx)
    return x.gather(1, idx[..., None].expand(-1, -1, *x.shape[2:]))


def attention_mask(valid: Tensor, causal: bool) -> Tensor:
    """Boolean [B, 1, S, S] mask, True = query i may attend to key j.

    Keys are real events only (and j <= i when causal). Every query may also attend to itself so
    that padding queries (whose output is never used) do not produce NaNs from empty softmaxes.
    """
    S = valid.size(1)
    allowed = valid[:, None, :].expand(-1, S, -1)
    eye = torch.eye(S, dtype=torch.bool, device=valid.device)
    if causal:
        allowed = allowed & torch.ones(S, S, dtype=torch.bool, device=valid.device).tril()
    return (allowed | eye)[:, None]


# --------------------------------------------------------------------------- attention


def masked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    allowed: Tensor,
    bias: Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Softmax attention over the allowed keys; rows with no allowed key return zeros.

    q [B, h, Q, d], k/v [B, h, K, d], allowed broadcastable to [B, h, Q, K], bias additive.
    Written out (not SDPA) so that additive biases and the empty-row rule are explicit.
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    if bias is not None:
        scores = scores + bias
    return masked_softmax(scores, allowed, dropout, training) @ v


def masked_softmax(scores: Tensor, allowed: Tensor, dropout: float = 0.0, training: bool = False) -> Tensor:
    """Softmax over the last dim restricted to ``allowed``; all-forbidden rows become zeros
    (not a uniform average over forbidden keys)."""
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = scores.softmax(-1) * allowed.any(-1, keepdim=True)
    return F.dropout(probs, dropout, training)


class MultiHeadAttention(nn.Module):
    """Post-LN multi-head self-attention with residual (the SASRec / BERT4Rec / RecBole layout)."""

    def __init__(self, hidden: int, n_heads: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def split_heads(self, x: Tensor) -> Tensor:
        B, S, H = x.shape
        return x.view(B, S, self.n_heads, H // self.n_heads).transpose(1, 2)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        q, k, v = (self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        ctx = masked_attention(q, k, v, allowed, dropout=self.dropout, training=self.training)
        ctx = ctx.transpose(1, 2).reshape(x.shape)
        return self.norm(x + self.out_dropout(self.out(ctx)))


class FeedForward(nn.Module):
    """Post-LN position-wise feed-forward with residual."""

    def __init__(self, hidden: int, inner: int, dropout: float, act: str = "gelu", eps: float = 1e-12):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, inner), activation(act), nn.Linear(inner, hidden), nn.Dropout(dropout)
        )
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


class TransformerBlock(nn.Module):
    def __init__(self, hidden: int, n_heads: int, inner: int, dropout: float, act: str = "gelu"):
        super().__init__()
        self.attn = MultiHeadAttention(hidden, n_heads, dropout)
        self.ffn = FeedForward(hidden, inner, dropout, act)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        return self.ffn(self.attn(x, allowed))


class BehaviorFeedForward(nn.Module):
    """One feed-forward expert per behavior, hard-routed by each event's behavior (post-LN).

    Every expert is applied to every position and each position keeps its own expert's output:
    with a handful of behaviors this is cheaper and simpler than gathering per-token weights.
    Padding (behavior 0) gets no expert, i.e. only the residual.
    """

    def __init__(self, hidden: int, inner: int, n_behaviors: int, dropout: float, act: str = "relu"):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_behaviors, hidden, inner) * 0.02)
        self.b1 = nn.Parameter(torch.zeros(n_behaviors, inner))
        self.w2 = nn.Parameter(torch.randn(n_behaviors, inner, hidden) * 0.02)
        self.b2 = nn.Parameter(torch.zeros(n_behaviors, hidden))
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: Tensor, behaviors: Tensor) -> Tensor:
        h = self.act(torch.einsum("bsh,nhi->bsni", x, self.w1) + self.b1)
        y = torch.einsum("bsni,nih->bsnh", h, self.w2) + self.b2  # [B, S, n_behaviors, H]
        own = (behaviors - 1).clamp(min=0)[..., None, None].expand(-1, -1, 1, y.size(-1))
        y = y.gather(2, own).squeeze(2) * (behaviors > 0)[..., None]
        return self.norm(x + self.dropout(y))


# --------------------------------------------------------------------------- behavior inputs


def next_behaviors(behaviors: Tensor, target_behavior: Tensor) -> Tensor:
    """Behavior (index + 1) of the event each position of a right-aligned row predicts: the next event's, and
    ``target_behavior`` (0-based) [B] for the last position. Values before a row's first event are never read."""
    return torch.cat([behaviors[:, 1:], target_behavior.reshape(-1, 1).to(behaviors) + 1], dim=1)


class BehaviorEmbedding(nn.Module):
    """Behavior part of an event's input vector, added to its item embedding by the ``<model>_behavior`` variants.

    ``event`` embeds the behavior of the event itself. Next-item models also get ``query``, the behavior of the
    event to predict (:func:`next_behaviors`), so their last state answers "which item will be <b>-ed next" as a
    cloze model's [MASK] does when it carries the requested behavior; cloze models need no query table.
    """

    def __init__(self, n_behaviors: int, dim: int, query: bool, std: float = 0.02):
        super().__init__()
        self.event = nn.Embedding(n_behaviors + 1, dim, padding_idx=0)
        self.query = nn.Embedding(n_behaviors + 1, dim, padding_idx=0) if query else None
        for table in (self.event, self.query):
            if table is not None:
                init_weights(table, std)

    def forward(self, behaviors: Tensor, query: Tensor | None = None) -> Tensor:
        x = self.event(behaviors)
        if self.query is not None:
            if query is None:
                raise ValueError("this model predicts the next event: pass the behaviors of the events to predict")
            x = x + self.query(query)
        return x


# --------------------------------------------------------------------------- misc


def relative_position_bucket(rel: Tensor, n_buckets: int = 32, max_distance: int = 40) -> Tensor:
    """Bidirectional log-bucketing of relative distances (key - query), as popularised by T5.

    Half of the buckets encode the sign; within a sign, small distances get exact buckets and
    larger ones share logarithmically wider buckets up to ``max_distance``.
    """
    half = n_buckets // 2
    bucket = (rel > 0).long() * half
    n = rel.abs()
    exact = half // 2
    log_ratio = torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(n < exact, n, large)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style init: N(0, std) weights, zero biases and padding rows, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
