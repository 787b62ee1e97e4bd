"""Shared-history attention equals attention over the history expanded to every beam (grouped KV heads,
padded histories, one or several fed tokens), and qwen3 beam search gives the same lists with it as with the
per-row buffered cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from transformers.cache_utils import DynamicCache

import seqrec_pipeline.decoding.stepping as stepping
from seqrec_pipeline.decoding import PrefixIndex, beam_search, build_prompts
from seqrec_pipeline.decoding.shared_prefix import (
    BACKEND,
    SharedPrefixLayer,
    select_shared,
    shared_prefix_attention,
    to_shared_prefix,
)
from seqrec_pipeline.vocab import TokenVocab

from .helpers import BEHAVIORS, LEVELS, random_codes, random_histories, tiny_model


def reference_attention(query, keys, values, valid, scaling):
    """Per-row attention over the row's full key sequence (GQA by repeating KV heads), -> [R, q, H, D]."""
    R, H, q, D = query.shape
    rep = H // keys.shape[1]
    k, v = keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)
    scores = query @ k.transpose(-1, -2) * scaling  # [R, H, q, T]
    T = keys.shape[-2]
    causal = torch.arange(T)[None, :] <= (T - q + torch.arange(q))[:, None]
    scores = scores.masked_fill(~(valid[:, None, None, :] & causal), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("q", [1, 3])
def test_attention_equals_expanded_history(q):
    g = torch.Generator().manual_seed(0)
    P, G, Hkv, H, S, D = 3, 5, 2, 4, 7, 8
    prefix_k, prefix_v = torch.randn(P, Hkv, S, D, generator=g), torch.randn(P, Hkv, S, D, generator=g)
    valid = torch.ones(P, S, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    layer = SharedPrefixLayer(prefix_k, prefix_v, valid, capacity=2)
    layer.select(torch.arange(P).repeat_interleave(G), same_sources=True)  # expand to G beams per query
    R = P * G
    for _ in range(2):  # the second update outgrows the capacity and reallocates
        new_k, new_v = torch.randn(R, Hkv, q, D, generator=g), torch.randn(R, Hkv, q, D, generator=g)
        tail_k, tail_v = layer.update(new_k, new_v)
    assert layer.get_seq_length() == S + 2 * q
    query = torch.randn(R, H, q, D, generator=g)
    rows = torch.arange(R) // G
    keys = torch.cat([prefix_k[rows], tail_k], dim=2)
    values = torch.cat([prefix_v[rows], tail_v], dim=2)
    full_valid = torch.cat([valid[rows], torch.ones(R, 2 * q, dtype=torch.bool)], dim=1)
    expected = reference_attention(query, keys, values, full_valid, 0.3)
    assert_close(layer.attend(query, tail_k, tail_v, 0.3), expected, atol=1e-5, rtol=1e-5)

    # a beam reorder inside each query keeps the history shared; the tail moves with its rows
    reorder = torch.tensor([4, 4, 0, 1, 2, 5, 9, 9, 6, 7, 14, 10, 11, 12, 13])
    layer.select(reorder, same_sources=True)
    assert layer.n_prefixes == P
    tail_k, tail_v = layer._tail[0][..., : layer.tail_length, :], layer._tail[1][..., : layer.tail_length, :]
    keys, values = keys[reorder], values[reorder]
    assert torch.equal(torch.cat([prefix_k[rows], tail_k], dim=2), keys)
    assert_close(layer.attend(query, tail_k, tail_v, 0.3),
                 reference_attention(query, keys, values, full_valid[reorder], 0.3), atol=1e-5, rtol=1e-5)

    # any other selection gives every new row its own copy of its history (correct, unshared)
    other = torch.tensor([3, 12, 12])
    layer.select(other, same_sources=False)
    assert layer.n_prefixes == 3 and torch.equal(layer.prefix_keys, prefix_k[other // G])
    layer.crop(-q)
    assert layer.get_seq_length() == S + q
    with pytest.raises(ValueError, match="shared history"):
        layer.crop(-(q + 1))


def test_backend_without_a_shared_cache_is_sdpa():
    g = torch.Generator().manual_seed(1)
    query, keys, values = (torch.randn(2, 4, 3, 8, generator=g) for _ in range(3))

    class Module(torch.nn.Module):
        is_causal, layer_idx, training = True, 0, False

    out, _ = shared_prefix_attention(Module(), query, keys, values, None, scaling=0.25)
    expected = reference_attention(query, keys, values, torch.ones(2, 3, dtype=torch.bool), 0.25)
    assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_prefilled_cache_converts_every_layer():
    g = torch.Generator().manual_seed(2)
    cache = DynamicCache()
    for layer in range(2):
        cache.update(torch.randn(2, 2, 4, 8, generator=g), torch.randn(2, 2, 4, 8, generator=g), layer)
    to_shared_prefix(cache, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), capacity=3)
    assert all(isinstance(layer, SharedPrefixLayer) for layer in cache.layers)
    select_shared(cache, torch.tensor([0, 0, 0, 1, 1, 1]), same_sources=True)
    assert cache.get_seq_length() == 4 and all(layer.n_rows == 6 and layer.n_prefixes == 2 for layer in cache.layers)


@pytest.mark.parametrize("mode", ["fixed_behavior", "behavior_item"])
def test_qwen3_beam_search_matches_the_per_row_cache(mode, monkeypatch):
    sizes = (3, 4, 12)
    vocab = TokenVocab(BEHAVIORS, sizes)
    codes = random_codes(sizes, 100, seed=3)
    model = tiny_model("qwen3", vocab)
    prompts = build_prompts(random_histories([5, 2, 7, 3], len(codes), len(BEHAVIORS), seed=4), codes, vocab, LEVELS)
    index = PrefixIndex.build(codes, sizes)
    requested = np.array([[1, 0, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=bool)  # uneven pairs
    kwargs = dict(mode=mode, behavior_levels=LEVELS, beam_size=8, batch_size=3)
    if mode == "fixed_behavior":
        kwargs["behaviors"] = requested
    shared = beam_search(model, prompts, index, **kwargs)
    assert model.config._attn_implementation != BACKEND  # the backend is switched back after every step
    original_init = stepping.ModelStepper.__init__

    def per_row_init(self, m):
        original_init(self, m)
        self.shared_prefix = False

    monkeypatch.setattr(stepping.ModelStepper, "__init__", per_row_init)
    per_row = beam_search(model, prompts, index, **kwargs)
    if mode == "fixed_behavior":
        assert shared.by_behavior.keys() == per_row.by_behavior.keys()
        for b in shared.by_behavior:
            assert torch.equal(shared.by_behavior[b].items, per_row.by_behavior[b].items)
            assert_close(shared.by_behavior[b].scores, per_row.by_behavior[b].scores, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(shared.items, per_row.items) and torch.equal(shared.behaviors, per_row.behaviors)
        assert_close(shared.scores, per_row.scores, atol=1e-5, rtol=1e-5)
