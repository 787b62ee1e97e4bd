"""KV-cache layers for beam search that neither re-copy the history at every step nor on every beam reorder.

A ``DynamicLayer`` appends a token with ``torch.cat`` (a copy of the whole cached length) and reorders beams
with ``index_select`` over the whole length as well, so each decoding step copied every row's history twice
per layer.  :class:`BufferedLayer` keeps the same interface over a preallocated ``[R, H, capacity, D]`` buffer:

- appending writes the new positions in place (the buffer grows by doubling when full);
- :meth:`BufferedLayer.reorder_tail` reorders only the positions after ``shared_length``: in a beam reorder
  every row stays inside its user's block of rows, and rows of one user share the history positions, so
  only the generated tokens differ between them.

:func:`buffer_cache` swaps the layers of any cache object the models here return (``DynamicCache``,
``GamerCache``, ``EncoderDecoderCache``) in place; the models keep calling the usual ``Cache`` methods.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys / values are views of the first ``length`` positions of a larger buffer."""

    def __init__(self, layer: DynamicLayer, extra: int, shared_length: int) -> None:
        super().__init__()
        self.is_initialized = layer.is_initialized
        for name in ("dtype", "device"):
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))
        self._buffers = [self._with_room(t, extra) for t in (layer.keys, layer.values)]
        self.length = layer.keys.shape[-2]
        self.shared_length = min(shared_length, self.length)

    @staticmethod
    def _with_room(t: torch.Tensor, extra: int) -> torch.Tensor:
        buffer = t.new_empty(*t.shape[:-2], t.shape[-2] + extra, t.shape[-1])
        buffer[..., : t.shape[-2], :] = t
        return buffer

    # keys / values: views; assignments from DynamicLayer's own methods replace the buffer
    @property
    def keys(self) -> torch.Tensor | None:
        return None if not hasattr(self, "_buffers") else self._buffers[0][..., : self.length, :]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        if value is not None and hasattr(self, "_buffers"):
            self._buffers[0], self.length = value, value.shape[-2]

    @property
    def values(self) -> torch.Tensor | None:
        return None if not hasattr(self, "_buffers") else self._buffers[1][..., : self.length, :]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        if value is not None and hasattr(self, "_buffers"):
            self._buffers[1] = value

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self._buffers[0].shape[-2]:
            room = max(n, self.length)
            self._buffers = [self._with_room(b[..., : self.length, :], room) for b in self._buffers]
        self._buffers[0][..., self.length : self.length + n, :] = key_states
        self._buffers[1][..., self.length : self.length + n, :] = value_states
        self.length += n
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length -= abs(tokens_to_remove)
        self.shared_length = min(self.shared_length, self.length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._buffers = [b.index_select(0, beam_idx.to(b.device)) for b in self._buffers]

    def reorder_tail(self, beam_idx: torch.LongTensor) -> None:
        """Reorder rows, copying only positions ``shared_length..length`` (rows keep their user)."""
        tail = slice(self.shared_length, self.length)
        for b in self._buffers:
            b[..., tail, :] = b[..., tail, :].index_select(0, beam_idx.to(b.device))


def cache_layers(cache: Cache) -> list:
    """Every layer list inside a cache (an ``EncoderDecoderCache`` holds two caches)."""
    inner = [getattr(cache, name) for name in ("self_attention_cache", "cross_attention_cache") if hasattr(cache, name)]
    caches = inner or [cache]
    return [c.layers for c in caches]


def buffer_cache(cache: Cache, extra: int) -> None:
    """Replace every initialized ``DynamicLayer`` of ``cache`` by a :class:`BufferedLayer` with room for ``extra``
    more positions; what is cached now becomes the shared (history) part."""
    for layers in cache_layers(cache):
        for i, layer in enumerate(layers):
            if type(layer) is DynamicLayer and layer.is_initialized:
                layers[i] = BufferedLayer(layer, extra, shared_length=layer.keys.shape[-2])


def reorder_tail(cache: Cache, rows: torch.LongTensor) -> bool:
    """Beam reorder of a buffered cache (only generated positions move); False if the cache is not buffered."""
    layers = [layer for group in cache_layers(cache) for layer in group]
    if not layers or not all(isinstance(layer, BufferedLayer) for layer in layers if layer.is_initialized):
        return False
    for layer in layers:
        if layer.is_initialized:
            layer.reorder_tail(rows)
    return True
