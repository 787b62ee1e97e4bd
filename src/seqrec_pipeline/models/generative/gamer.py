"""``gamer``: GAMER's decoder (the reference's "Qwen3Multi"), re-implemented (docs/design.md#gamer).

A Qwen3-style decoder (pre-RMSNorm, GQA, QK-norm, RoPE) over item blocks ``[behavior, c_1, ..., c_L]``,
with three additions:

1. **Slot-routed expert FFNs** in every layer: one SwiGLU expert per block position, chosen by the ``slot``
   tensor (no learned router), computed for all experts at once (``experts.py``).
2. **Behavior injection** in the lower layers (``injection_layers``): a ``behavior_embed_dim`` embedding of
   the block's behavior is concatenated to the FFN input of code tokens (behavior tokens and pads get a
   zero vector), as the reference's ``behavior_index``.
3. **Gated cross-level attention** in the upper layers (``cross_layers``), after self-attention: own
   q/k/v/o projections, per-head behavior embeddings added to q/k/v, RMSNorm on q/k, RoPE, output
   ``o_proj(attn) * SiLU(gate_proj(h))``.  Token i may attend to token j iff ``j <= i``,
   ``level[j] < level[i]`` and j is not padding.  A row without any allowed key (every lowest-level token,
   every pad) outputs exactly zero; the reference's additive mask turned such rows into a uniform average
   over all positions, future ones included (a training-time leak).  Those rows are skipped altogether
   (:class:`CrossLevelRows`): only rows with a lower-level key compute queries, output and gate.

Differences from the reference, on purpose: metadata comes from explicit ``slot`` / ``behavior`` / ``level``
tensors (no token-id parsing, no block-alignment assumption, no state on modules); masks are built on the
device from those small vectors each forward; pads share expert 0 (their outputs are never read) instead
of owning one; position ids count real tokens, so left-padded prompts behave like unpadded ones.

Caching: :class:`GamerCache` holds the self-attention K/V (indices ``0..n_layers-1``), the cross-level K/V
(indices ``n_layers + r`` for the r-th cross layer) and the per-token ``level`` of every cached position (the
last index), all as ``DynamicLayer`` s of one ``Cache``, so ``reorder_cache`` / ``batch_repeat_interleave`` /
``batch_select_indices`` on the cache object expand or reorder all of it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedModel, Qwen3Config
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
    apply_rotary_pos_emb,
    rotate_half,
)

from .common import (
    Dropout,
    RecLMOutput,
    block_items,
    dropout,
    item_cross_entropy,
    item_keys,
    position_ids_from_mask,
    tempered_cross_entropy,
)
from .experts import EXPERT_IMPLS, SlotExpertFFN, SlotRouting, injection_index
from .masks import TokenMeta, block_ids, build_attention_masks, session_position_ids

FFN_EXPERTS = ("dense", "slot", "behavior_slot")


@strict
class GamerConfig(Qwen3Config):
    """Qwen3 fields (width, heads, RoPE, norms) plus GAMER's.  ``intermediate_size`` is each expert's width."""

    model_type = "seqrec_gamer"

    num_slots: int = 5  # P: tokens per item block (TokenVocab.block_size)
    num_behaviors: int = 1
    use_behavior_token: bool = True  # slot 0 is the behavior token (no injection on it)
    behavior_embed_dim: int = 64
    injection_layers: list[int] | None = None  # default: the lower half
    cross_layers: list[int] | None = None  # default: the upper half
    resid_dropout: float = 0.0  # on every residual branch (reference: 0.2)
    loss_temperature: float = 0.7  # loss = CE(logits / loss_temperature); not a generation setting
    expert_impl: str = "auto"  # "auto" | "grouped_mm" | "bmm"
    # Variants of the family (docs/design.md#session-models, #moe-variants); each model name fixes its own.
    ffn_experts: str = "slot"  # dense: one FFN | slot: one expert per slot | behavior_slot: per (behavior, slot)
    session_mask: bool = False  # session self-/cross-masks and session RoPE positions
    vocab: dict | None = None
    # Item head (docs/design.md#item-head): a dense softmax over the catalog from the hidden state that predicts an
    # item's first code, trained with the code loss (weight ``item_loss_weight``); it rescores the beam's items.
    item_head: bool = False
    n_items: int = 0  # catalog size, set from the SID table when ``item_head`` is on
    item_loss_weight: float = 1.0
    item_score_weight: float = 1.0  # decoding: beam score + this x log p_head(item)
    # The head's rows are the items' input embeddings too (tied, as SASRec's): each history item's row is added to
    # the input of its block's last code, where the codes have named the item (docs/design.md#item-head).
    item_input: bool = False

    # What ``None`` layer lists become: injection in the lower half, cross-level attention in the upper half
    # (gamer), or none (class attributes, not fields: each variant fixes its own).
    injection_by_default = True
    cross_by_default = True

    def __post_init__(self, **kwargs):
        half = self.num_hidden_layers // 2
        if self.injection_layers is None:
            self.injection_layers = list(range(half)) if self.injection_by_default else []
        if self.cross_layers is None:
            self.cross_layers = list(range(half, self.num_hidden_layers)) if self.cross_by_default else []
        self.injection_layers = sorted(int(i) for i in self.injection_layers)
        self.cross_layers = sorted(int(i) for i in self.cross_layers)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of the ``@strict`` validation."""
        for name in ("injection_layers", "cross_layers"):
            bad = [i for i in getattr(self, name) if not 0 <= i < self.num_hidden_layers]
            if bad:
                raise ValueError(f"{name} {bad} outside 0..{self.num_hidden_layers - 1}")
        if self.expert_impl not in EXPERT_IMPLS:
            raise ValueError(f"expert_impl must be one of {EXPERT_IMPLS}, got {self.expert_impl!r}")
        if self.num_slots < 1 or self.num_behaviors < 1:
            raise ValueError("num_slots and num_behaviors must be >= 1")
        if self.ffn_experts not in FFN_EXPERTS:
            raise ValueError(f"ffn_experts must be one of {FFN_EXPERTS}, got {self.ffn_experts!r}")
        if self.item_input and not self.item_head:
            raise ValueError("item_input reuses the item head's rows: it needs item_head")
        if self.item_head and self.n_items < 1:
            raise ValueError("item_head needs n_items, the catalog size (build_model(..., catalog_size=len(codes)))")

    @property
    def num_experts(self) -> int:
        return {"dense": 1, "slot": self.num_slots, "behavior_slot": self.num_behaviors * self.num_slots}[
            self.ffn_experts
        ]


def expert_index(config: GamerConfig, slot: torch.Tensor, behavior: torch.Tensor) -> torch.Tensor:
    """The FFN expert of every token: 0 (dense), its slot, or ``behavior * num_slots + slot`` (pads: 0)."""
    if config.ffn_experts == "dense":
        return torch.zeros_like(slot)
    if config.ffn_experts == "slot":
        return slot
    return behavior * config.num_slots + slot


# --------------------------------------------------------------------------------------------- cache


def cross_cache_index(config: GamerConfig, layer_idx: int) -> int:
    """Cache index of the cross-level K/V of decoder layer ``layer_idx`` (after the self-attention ones)."""
    return config.num_hidden_layers + config.cross_layers.index(layer_idx)


class GamerCache(DynamicCache):
    """One ``Cache`` for all of GAMER's decoding state.

    Layers ``0..n_layers-1``: self-attention K/V; ``n_layers + r``: K/V of the r-th cross-level layer; last:
    the (level, session, block) of every cached position (``masks.TokenMeta``), stored as ``[B, 1, T, 3]``
    "keys" (and values) so that
    every batch operation of ``DynamicLayer`` (concatenate on the time axis; select / repeat / reorder on
    the batch axis; crop) applies to it unchanged.
    """

    def __init__(self, config: GamerConfig) -> None:
        n_layers = config.num_hidden_layers + len(config.cross_layers) + 1
        # An explicit layer list instead of DynamicCache's config-driven one.
        Cache.__init__(self, layers=[DynamicLayer() for _ in range(n_layers)])

    @property
    def meta_index(self) -> int:
        return len(self.layers) - 1

    def last_block(self) -> torch.Tensor | int:
        """Block index of the newest cached position ``[B]`` (0 before the first forward)."""
        layer = self.layers[self.meta_index]
        if not layer.is_initialized or layer.keys.shape[-2] == 0:
            return 0
        return layer.keys[:, 0, -1, 2]

    def update_meta(self, meta: TokenMeta) -> TokenMeta:
        """Append the new tokens' metadata ``[B, Q]``; returns that of all positions ``[B, past + Q]``."""
        stacked = meta.stacked()[:, None]
        keys, _ = self.layers[self.meta_index].update(stacked, stacked)
        return TokenMeta.unstack(keys[:, 0])

    def update_levels(self, level: torch.LongTensor) -> torch.LongTensor:
        """Append the new tokens' levels ``[B, Q]``; returns the levels of all positions ``[B, past + Q]``."""
        return self.update_meta(TokenMeta(level)).level


# --------------------------------------------------------------------------------------------- attention


@dataclass
class CrossLevelRows:
    """The query rows of the cross-level attention that have at least one allowed key, packed to the left.

    Rows without a key (every lowest-level token, every pad) output exactly zero, so their queries,
    output projections and gates are never computed.  In multi-behavior logs most events sit on the lowest
    level (views, clicks), so this skips most of the cross-level work.  Keys and values are still computed
    for every token (the cache needs them).

    index [B, M]: positions of the rows (rows with a key first, in order; M = the most such rows in any
    sequence); valid [B, M]: whether the packed row has a key; mask [B, 1, M, K]: their cross masks.
    """

    index: torch.Tensor
    valid: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def pack(cls, cross_mask: torch.Tensor, has_key: torch.Tensor) -> CrossLevelRows:
        batch, query_length = has_key.shape
        if query_length == 1:  # a decoding step: nothing to skip, and no host sync
            index = has_key.new_zeros(batch, 1, dtype=torch.long)
        else:
            n_rows = int(has_key.sum(dim=1).max())  # one host sync per forward, shared by all cross layers
            index = torch.argsort((~has_key).to(torch.int8), dim=1, stable=True)[:, :n_rows]
        key_length = cross_mask.shape[-1]
        mask = cross_mask.gather(2, index[:, None, :, None].expand(-1, 1, -1, key_length))
        return cls(index=index, valid=has_key.gather(1, index), mask=mask)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of x [B, Q, ...] -> [B, M, ...]."""
        index = self.index.view(*self.index.shape, *([1] * (x.dim() - 2)))
        return x.gather(1, index.expand(-1, -1, *x.shape[2:]))

    def scatter(self, rows: torch.Tensor, query_length: int) -> torch.Tensor:
        """Packed rows [B, M, H] back to [B, Q, H]; rows without a key are zero."""
        rows = rows * self.valid[..., None].to(rows.dtype)
        out = rows.new_zeros(rows.shape[0], query_length, rows.shape[-1])
        return out.scatter(1, self.index[..., None].expand_as(rows), rows)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on one of q / k ``[B, heads, L, D]`` (``apply_rotary_pos_emb`` rotates q and k together, but the
    cross-level queries are a gathered subset of the keys' positions)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def grouped_query_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """SDPA for grouped-query attention without copying K/V per query head.

    query [B, Hq, Q, D], key/value [B, Hkv, K, D], mask [B, 1, Q, K] bool -> [B, Q, Hq * D].
    The ``Hq / Hkv`` query heads sharing a K/V head are folded into the query-length axis (rows
    ``r * Q + i``), so every backend sees plain multi-head attention over ``Hkv`` heads; the mask is
    repeated along that axis.  Query head h uses K/V head ``h // (Hq / Hkv)``, as ``repeat_kv`` does.
    """
    batch, n_heads, query_length, head_dim = query.shape
    n_kv_heads = key.shape[1]
    n_rep = n_heads // n_kv_heads
    query = query.reshape(batch, n_kv_heads, n_rep * query_length, head_dim)
    if dropout_p > 0 and query.device.type == "cpu":
        out = _math_attention_cpu_dropout(query, key, value, mask, dropout_p)
    else:
        if n_rep > 1:
            mask = mask.repeat(1, 1, n_rep, 1)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
    out = out.reshape(batch, n_heads, query_length, head_dim).transpose(1, 2)
    return out.reshape(batch, query_length, n_heads * head_dim)


def _math_attention_cpu_dropout(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """SDPA's math path (what CPU training with attention dropout runs) with :func:`common.dropout`'s mask:
    SDPA draws it with the slower ``bernoulli_``; the attention mask is broadcast over the folded query heads
    instead of repeated.  Every row has a key (``build_attention_masks`` guarantees it)."""
    batch, n_kv_heads, rows, head_dim = query.shape
    query_length, key_length = mask.shape[-2], mask.shape[-1]
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(head_dim**-0.5)
    scores = scores.view(batch, n_kv_heads, rows // query_length, query_length, key_length)
    scores = scores.masked_fill_(~mask[:, :, None], float("-inf")).view(batch, n_kv_heads, rows, key_length)
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), dropout_p), value)


class GamerSelfAttention(nn.Module):
    """Qwen3 self-attention: GQA, RMSNorm on per-head q/k, RoPE, causal + padding mask."""

    def __init__(self, config: GamerConfig, cache_index: int) -> None:
        super().__init__()
        self.cache_index = cache_index
        self.head_dim = config.head_dim
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.attention_dropout = config.attention_dropout
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=config.attention_bias)
        self.q_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q/k/v as [B, heads, Q, D]."""
        batch, length, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, length, -1, self.head_dim)
        k = self.k_proj(hidden_states).view(batch, length, -1, self.head_dim)
        v = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim)
        return self.q_norm(q).transpose(1, 2), self.k_norm(k).transpose(1, 2), v.transpose(1, 2)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        cache: Cache | None,
    ) -> torch.Tensor:
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.cache_index)
        dropout_p = self.attention_dropout if self.training else 0.0
        return grouped_query_attention(q, k, v, mask, dropout_p)

    def forward(self, hidden_states, position_embeddings, mask, cache=None) -> torch.Tensor:
        q, k, v = self.project(hidden_states)
        return self.o_proj(self.attend(q, k, v, position_embeddings, mask, cache))


class CrossLevelAttention(GamerSelfAttention):
    """Gated attention from each token to earlier tokens of strictly lower behavior level.

    q = RMSNorm(W_q h + E_q[b]), k = RMSNorm(W_k h + E_k[b]), v = W_v h + E_v[b] with per-head behavior
    embeddings E (b = the block's behavior), RoPE on q/k, output ``o_proj(attn) * SiLU(W_g h)``.
    """

    def __init__(self, config: GamerConfig, cache_index: int) -> None:
        super().__init__(config, cache_index)
        self.gate_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.behavior_q = nn.Embedding(config.num_behaviors, self.n_heads * self.head_dim)
        self.behavior_k = nn.Embedding(config.num_behaviors, self.n_kv_heads * self.head_dim)
        self.behavior_v = nn.Embedding(config.num_behaviors, self.n_kv_heads * self.head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        behavior: torch.LongTensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        rows: CrossLevelRows,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        cos, sin = position_embeddings
        # Keys / values of every token.
        k = self.k_proj(hidden_states) + self.behavior_k(behavior)
        v = self.v_proj(hidden_states) + self.behavior_v(behavior)
        k = self.k_norm(k.view(batch, length, -1, self.head_dim)).transpose(1, 2)
        v = v.view(batch, length, -1, self.head_dim).transpose(1, 2)
        k = rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.cache_index)
        # Queries, output and gate of the rows that have a lower-level key only.
        h_rows, n_rows = rows.gather(hidden_states), rows.index.shape[1]
        if n_rows == 0:  # no token of this batch has a lower-level key
            return torch.zeros_like(hidden_states)
        q = self.q_proj(h_rows) + self.behavior_q(rows.gather(behavior))
        q = self.q_norm(q.view(batch, n_rows, self.n_heads, self.head_dim)).transpose(1, 2)
        q = rope(q, rows.gather(cos), rows.gather(sin))
        dropout_p = self.attention_dropout if self.training else 0.0
        attn = grouped_query_attention(q, k, v, rows.mask, dropout_p)
        out = self.o_proj(attn) * F.silu(self.gate_proj(h_rows))
        return rows.scatter(out, length)


# --------------------------------------------------------------------------------------------- layers


class GamerDecoderLayer(nn.Module):
    def __init__(self, config: GamerConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        hidden = config.hidden_size
        self.input_layernorm = Qwen3RMSNorm(hidden, eps=config.rms_norm_eps)
        self.self_attn = GamerSelfAttention(config, cache_index=layer_idx)

        self.cross_attn = None
        if layer_idx in config.cross_layers:
            self.cross_layernorm = Qwen3RMSNorm(hidden, eps=config.rms_norm_eps)
            self.cross_attn = CrossLevelAttention(config, cache_index=cross_cache_index(config, layer_idx))

        self.behavior_embed = None
        extra = 0
        if layer_idx in config.injection_layers:
            # Row 0 = "no behavior" (behavior tokens, pads): kept at zero by padding_idx.
            self.behavior_embed = nn.Embedding(config.num_behaviors + 1, config.behavior_embed_dim, padding_idx=0)
            extra = config.behavior_embed_dim
        self.post_attention_layernorm = Qwen3RMSNorm(hidden, eps=config.rms_norm_eps)
        self.mlp = SlotExpertFFN(
            config.num_experts, hidden + extra, config.intermediate_size, hidden, config.hidden_act, config.expert_impl
        )
        self.dropout = Dropout(config.resid_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        self_mask: torch.Tensor,
        cross_rows: CrossLevelRows | None,
        routing: SlotRouting,
        behavior: torch.LongTensor,
        injection_index: torch.LongTensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, self_mask, cache)
        hidden_states = hidden_states + self.dropout(attn)

        if self.cross_attn is not None:
            cross = self.cross_attn(self.cross_layernorm(hidden_states), behavior, position_embeddings, cross_rows, cache)
            hidden_states = hidden_states + self.dropout(cross)

        ffn_input = self.post_attention_layernorm(hidden_states)
        if self.behavior_embed is not None:  # FFN of [h, behavior_embed(injection_index)], as a table lookup
            ffn_output = self.mlp(ffn_input, routing, self.behavior_embed.weight, injection_index)
        else:
            ffn_output = self.mlp(ffn_input, routing)
        hidden_states = hidden_states + self.dropout(ffn_output)
        return hidden_states


class GamerPreTrainedModel(PreTrainedModel):
    config_class = GamerConfig
    config: GamerConfig
    base_model_prefix = "model"
    _no_split_modules = ["GamerDecoderLayer"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SlotExpertFFN):
            init.normal_(module.gate_up_proj, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.down_proj, mean=0.0, std=self.config.initializer_range)


class GamerModel(GamerPreTrainedModel):
    def __init__(self, config: GamerConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([GamerDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen3RotaryEmbedding(config=config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        slot: torch.LongTensor,
        behavior: torch.LongTensor,
        level: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: GamerCache | None = None,
        use_cache: bool | None = None,
        session: torch.LongTensor | None = None,
        input_embeds_extra: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPast:
        if slot is None or behavior is None or level is None:
            name = self.config.model_type
            raise ValueError(f"{name} needs the per-token slot, behavior and level tensors (common.py)")
        if self.config.session_mask and session is None:
            raise ValueError(f"{self.config.model_type} needs the per-token session rank (common.py)")
        batch, query_length = input_ids.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = GamerCache(self.config)
        if cache is not None and not isinstance(cache, GamerCache):
            raise TypeError(f"this model needs a GamerCache (it caches per-position metadata too), got {type(cache)}")
        past_length = cache.get_seq_length() if cache is not None else 0

        if attention_mask is None:
            attention_mask = torch.ones(batch, past_length + query_length, dtype=torch.long, device=input_ids.device)
        if attention_mask.shape != (batch, past_length + query_length):
            raise ValueError(
                f"attention_mask must cover cached + new tokens: expected {(batch, past_length + query_length)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        new_valid = attention_mask[:, past_length:].bool()
        if self.config.session_mask:
            last_block = cache.last_block() if cache is not None else 0
            meta = TokenMeta(level, session, block_ids(slot, new_valid, last_block))
            if position_ids is None:
                position_ids = session_position_ids(session, slot, self.config.num_slots)
        else:
            meta = TokenMeta(level)
            if position_ids is None:
                position_ids = position_ids_from_mask(attention_mask, query_length, past_length, input_ids.device)
        key_meta = cache.update_meta(meta) if cache is not None else meta
        self_mask, cross_mask, cross_has_key = build_attention_masks(attention_mask, meta, key_meta, past_length)
        cross_rows = CrossLevelRows.pack(cross_mask, cross_has_key) if self.config.cross_layers else None

        routing = SlotRouting.from_slots(expert_index(self.config, slot, behavior), self.config.num_experts)
        injection = injection_index(slot, behavior, new_valid, self.config.use_behavior_token)

        hidden_states = self.embed_tokens(input_ids)
        if input_embeds_extra is not None:
            hidden_states = hidden_states + input_embeds_extra
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                position_embeddings,
                self_mask,
                cross_rows,
                routing,
                behavior,
                injection,
                cache,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


class GamerForCausalLM(GamerPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: GamerConfig) -> None:
        super().__init__(config)
        self.model = GamerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.item_head = nn.Linear(config.hidden_size, config.n_items, bias=False) if config.item_head else None
        if config.item_input:  # the catalog's code tokens as sorted keys (common.item_keys), set by set_item_codes
            self.register_buffer("catalog_keys", torch.full((config.n_items,), -1, dtype=torch.long))
            self.register_buffer("catalog_order", torch.arange(config.n_items))
        self.post_init()

    @property
    def n_codes(self) -> int:
        """Code tokens per item (L)."""
        return len(self.config.vocab["level_sizes"])

    def set_item_codes(self, code_tokens) -> None:
        """Give an ``item_input`` model its catalog: the code token ids ``[n_items, L]`` (a tensor or an array) of every
        item, in the item head's order (saved with the weights)."""
        code_tokens = torch.as_tensor(code_tokens)
        shape = (self.config.n_items, self.n_codes)
        if tuple(code_tokens.shape) != shape:
            raise ValueError(f"code tokens must have shape {list(shape)}, got {list(code_tokens.shape)}")
        keys, order = torch.sort(item_keys(code_tokens, self.config.vocab_size))
        self.catalog_keys.copy_(keys)
        self.catalog_order.copy_(order)

    def _item_input(self, input_ids: torch.Tensor, slot: torch.Tensor | None) -> torch.Tensor | None:
        if not self.config.item_input or slot is None:
            return None
        items = block_items(input_ids, slot, self.catalog_keys, self.catalog_order, self.n_codes,
                            self.config.num_slots - 1, self.config.vocab_size)
        found = items >= 0
        return self.item_head.weight[items.clamp(min=0)] * found[..., None].to(self.item_head.weight.dtype)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        slot: torch.LongTensor | None = None,
        behavior: torch.LongTensor | None = None,
        level: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: GamerCache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        session: torch.LongTensor | None = None,
        past_key_values: GamerCache | None = None,  # the pre-5.x name of ``cache``
        item_labels: torch.LongTensor | None = None,
        return_item_logits: bool = False,
        **kwargs,  # e.g. num_items_in_batch from the HF Trainer: unused
    ) -> RecLMOutput:
        """Logits are untempered; ``labels`` give the loss on ``logits / config.loss_temperature`` (causal shift).

        With an item head, ``item_labels`` (the item index at each block's first code, -100 elsewhere) add
        ``item_loss_weight`` x its cross-entropy to the loss, and ``return_item_logits`` returns its logits
        ``[B, n_items]`` at the last position.

        With ``cache``, ``attention_mask`` covers cached + new tokens and ``slot`` / ``behavior`` / ``level``
        (and ``session``, read by the session variants only) cover the new tokens only.  ``logits_to_keep=n``
        computes logits for the last n positions only.
        """
        cache = cache if cache is not None else past_key_values
        outputs = self.model(
            input_embeds_extra=self._item_input(input_ids, slot),
            input_ids=input_ids,
            slot=slot,
            behavior=behavior,
            level=level,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            session=session,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = tempered_cross_entropy(logits, labels, self.config.loss_temperature, shift=True)
        if item_labels is not None and self.item_head is not None:
            item_loss = self.config.item_loss_weight * item_cross_entropy(self.item_head, hidden_states, item_labels)
            loss = item_loss if loss is None else loss + item_loss
        item_logits = None
        if return_item_logits and self.item_head is not None:
            item_logits = self.item_head(hidden_states[:, -1])
        return RecLMOutput(loss=loss, logits=logits, cache=outputs.cache, item_logits=item_logits)
