"""BufferedLayer behaves like the DynamicLayer it replaces; a tail reorder equals a full reorder when rows
keep their user (the shared history positions are equal within a user's rows)."""

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from seqrec_pipeline.decoding.kv_buffer import BufferedLayer, buffer_cache, reorder_tail


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _pair(generator):
    dynamic = DynamicLayer()
    history = torch.randn(2, 3, 5, 4, generator=generator)
    rows = torch.tensor([0, 0, 0, 1, 1, 1])  # 3 beams per user, history shared within a user
    dynamic.update(history[rows], history[rows].clone() + 1)
    buffered = BufferedLayer(dynamic, extra=2, shared_length=5)
    return dynamic, buffered


def test_update_crop_and_reorders_match_dynamic_layer(generator):
    dynamic, buffered = _pair(generator)
    for n in (1, 2, 3):  # the third append outgrows the spare room and reallocates
        k, v = torch.randn(6, 3, n, 4, generator=generator), torch.randn(6, 3, n, 4, generator=generator)
        dk, dv = dynamic.update(k, v)
        bk, bv = buffered.update(k, v)
        assert torch.equal(dk, bk) and torch.equal(dv, bv)
        assert buffered.get_seq_length() == dynamic.get_seq_length()
    within_users = torch.tensor([2, 2, 0, 4, 3, 3])
    dynamic.reorder_cache(within_users)
    buffered.reorder_tail(within_users)
    assert torch.equal(dynamic.keys, buffered.keys) and torch.equal(dynamic.values, buffered.values)
    dynamic.crop(-2)
    buffered.crop(-2)
    assert torch.equal(dynamic.keys, buffered.keys) and buffered.get_seq_length() == 9
    expand = torch.tensor([5, 5, 0])
    dynamic.reorder_cache(expand)
    buffered.reorder_cache(expand)
    assert torch.equal(dynamic.keys, buffered.keys) and torch.equal(dynamic.values, buffered.values)


def test_buffer_cache_swaps_every_layer_and_tail_reorder_needs_it(generator):
    cache = DynamicCache()
    for layer in range(2):
        cache.update(torch.randn(4, 2, 3, 8, generator=generator), torch.randn(4, 2, 3, 8, generator=generator), layer)
    assert not reorder_tail(cache, torch.arange(4))  # a plain cache is left to reorder_cache
    keys = [layer.keys.clone() for layer in cache.layers]
    buffer_cache(cache, extra=4)
    assert all(isinstance(layer, BufferedLayer) for layer in cache.layers)
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.layers, keys))
    assert cache.get_seq_length() == 3 and reorder_tail(cache, torch.tensor([1, 0, 3, 2]))
