"""Beam-search attention that reads each query's history once, not once per beam (decoder-only HF models).

After the prefill every decoding row of one query (the beams of a (user, behavior) pair) has the same
history keys and values; only the few generated tokens differ.  Expanding the history cache to the beams
(``index_select`` of every row's whole history, per layer) and attending over R private copies of it would
dominate the decoding time.  Here:

- :class:`SharedPrefixLayer` keeps the history once per *query* ``[P, Hkv, S, D]`` (with its padding mask)
  and only the generated tail per *row* ``[R, Hkv, t, D]`` in a small preallocated buffer; rows are
  query-major, ``G = R / P`` per query;
- :func:`shared_prefix_attention` (registered as the transformers attention backend ``seqrec_shared_prefix``)
  scores the history for all G beams and the query heads sharing a KV head with one matrix product per
  (query, KV head), the tail per row, and takes one softmax over both.  The same numbers as attention over
  the expanded cache, up to float summation order.

Rows may only move within their query (``select(..., same_sources=True)``: a beam expansion or reorder,
query-major with an equal number of rows per query).  Any other selection gathers the history per new row
(correct, just no sharing).  The backend is active only inside :func:`shared_prefix_backend`; outside a
shared cache it is plain SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

BACKEND = "seqrec_shared_prefix"


class SharedPrefixLayer(DynamicLayer):
    """One attention layer's cache: a history per query and a generated tail per row."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, prefix_valid: torch.Tensor,
                 capacity: int) -> None:
        super().__init__()
        self.is_initialized = True
        self.dtype, self.device = prefix_keys.dtype, prefix_keys.device
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values  # [P, Hkv, S, D]
        self.prefix_valid = prefix_valid.bool()  # [P, S], False = left padding
        P, Hkv, _, D = prefix_keys.shape
        self._tail = [prefix_keys.new_empty(P, Hkv, max(capacity, 1), D) for _ in range(2)]  # [R, Hkv, cap, D]
        self.tail_length = 0

    @property
    def n_prefixes(self) -> int:
        return self.prefix_keys.shape[0]

    @property
    def n_rows(self) -> int:
        return self._tail[0].shape[0]

    # -------------------------------------------------------------------------------- Cache layer API
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, end = key_states.shape[-2], self.tail_length + key_states.shape[-2]
        if end > self._tail[0].shape[-2]:  # grow by doubling
            self._tail = [torch.cat([b, torch.empty_like(b)[..., : max(n, b.shape[-2]), :]], dim=-2)
                          for b in self._tail]
        self._tail[0][..., self.tail_length : end, :] = key_states
        self._tail[1][..., self.tail_length : end, :] = value_states
        self.tail_length = end
        return self._tail[0][..., :end, :], self._tail[1][..., :end, :]

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[-2] + self.tail_length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if abs(tokens_to_remove) > self.tail_length:
            raise ValueError("cannot crop into the shared history")
        self.tail_length -= abs(tokens_to_remove)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.select(beam_idx, same_sources=False)

    # -------------------------------------------------------------------------------- beams
    def select(self, rows: torch.Tensor, same_sources: bool) -> None:
        """Keep rows ``rows`` in that order.  ``same_sources``: query-major rows, the same number per query,
        each from its own query's block (beam expansion / reorder): the history stays shared."""
        rows = rows.to(self.device)
        P, R = self.n_prefixes, self.n_rows
        if not (same_sources and rows.shape[0] % P == 0):
            prefix_of_row = rows // (R // P)
            self.prefix_keys = self.prefix_keys.index_select(0, prefix_of_row)
            self.prefix_values = self.prefix_values.index_select(0, prefix_of_row)
            self.prefix_valid = self.prefix_valid.index_select(0, prefix_of_row)
        self._tail = [b.index_select(0, rows) for b in self._tail]

    # -------------------------------------------------------------------------------- attention
    def attend(self, query: torch.Tensor, tail_keys: torch.Tensor, tail_values: torch.Tensor,
               scaling: float) -> torch.Tensor:
        """``query [R, H, q, D]`` (the newest q tokens of every row), this layer's tail ``[R, Hkv, t, D]``
        (including those q tokens) -> attention output ``[R, q, H, D]`` (the layout SDPA backends return)."""
        R, H, q, D = query.shape
        P, Hkv, S, _ = self.prefix_keys.shape
        G, rep, t = R // P, H // Hkv, tail_keys.shape[-2]
        m = rep * q  # query vectors per (row, KV head)
        by_query = query.reshape(P, G, Hkv, m, D).transpose(1, 2).reshape(P, Hkv, G * m, D)
        history = torch.matmul(by_query, self.prefix_keys.transpose(-1, -2)) * scaling  # [P, Hkv, G*m, S]
        history = history.masked_fill(~self.prefix_valid[:, None, None, :], float("-inf"))
        history = history.view(P, Hkv, G, m, S).transpose(1, 2).reshape(R, Hkv, m, S)
        tail = torch.matmul(query.reshape(R, Hkv, m, D), tail_keys.transpose(-1, -2)) * scaling  # [R, Hkv, m, t]
        if q > 1:  # causal inside the fed block: token i sits at tail position t - q + i
            pos = torch.arange(t, device=query.device)
            seen = pos[None, :] <= (t - q + torch.arange(q, device=query.device))[:, None]  # [q, t]
            tail = tail.view(R, Hkv, rep, q, t).masked_fill(~seen, float("-inf")).view(R, Hkv, m, t)
        weights = torch.softmax(torch.cat([history, tail], dim=-1), dim=-1, dtype=torch.float32).to(query.dtype)
        w_history = weights[..., :S].reshape(P, G, Hkv, m, S).transpose(1, 2).reshape(P, Hkv, G * m, S)
        out = torch.matmul(w_history, self.prefix_values).view(P, Hkv, G, m, D).transpose(1, 2).reshape(R, Hkv, m, D)
        out = out + torch.matmul(weights[..., S:], tail_values)
        return out.view(R, Hkv, rep, q, D).reshape(R, H, q, D).transpose(1, 2).contiguous()


def to_shared_prefix(cache: Cache, prompt_mask: torch.Tensor, capacity: int) -> None:
    """Replace the prefilled ``DynamicLayer``s of ``cache`` (one row per prompt) by :class:`SharedPrefixLayer`s."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            cache.layers[i] = SharedPrefixLayer(layer.keys, layer.values, prompt_mask, capacity)


def select_shared(cache: Cache, rows: torch.Tensor, same_sources: bool) -> None:
    for layer in cache.layers:
        if isinstance(layer, SharedPrefixLayer):
            layer.select(rows, same_sources)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                            scaling: float | None = None, shared_prefix: Cache | None = None, **kwargs):
    """The ``seqrec_shared_prefix`` backend: shared-history attention when the call passes ``shared_prefix``
    (the cache holding :class:`SharedPrefixLayer`s), else transformers' SDPA attention."""
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    return shared_prefix.layers[module.layer_idx].attend(query, key, value, scaling), None


AttentionInterface.register(BACKEND, shared_prefix_attention)
AttentionMaskInterface.register(BACKEND, sdpa_mask)


@contextmanager
def shared_prefix_backend(model):
    """Route ``model``'s attention through :func:`shared_prefix_attention` for the duration of the block."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = BACKEND
    try:
        yield
    finally:
        model.config._attn_implementation = previous
