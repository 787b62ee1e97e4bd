"""GAMER specifics: level-mask semantics of the cross-level attention, behavior injection, cache layout."""

from __future__ import annotations

import itertools

import torch
from genmodel_helpers import LEVELS, make_batch, random_row, tiny_model
from torch.testing import assert_close

from seqrec_pipeline.models.generative import GamerCache, build_attention_masks
from seqrec_pipeline.models.generative.gamer import CrossLevelRows


def test_masks_match_a_brute_force_definition(generator):
    batch, past, new = 3, 4, 5
    key_valid = (torch.rand(batch, past + new, generator=generator) > 0.3).long()
    key_level = torch.randint(3, (batch, past + new), generator=generator)
    self_mask, cross_mask, has_key = build_attention_masks(key_valid, key_level[:, past:], key_level, past)
    assert self_mask.shape == cross_mask.shape == (batch, 1, new, past + new)
    for b, q, k in itertools.product(range(batch), range(new), range(past + new)):
        i = past + q  # absolute position of the query
        causal_real = k <= i and bool(key_valid[b, k])
        assert bool(self_mask[b, 0, q, k]) == (causal_real or k == i)
        allowed = causal_real and bool(key_valid[b, i]) and int(key_level[b, k]) < int(key_level[b, i])
        any_allowed = any(
            kk <= i and key_valid[b, kk] and key_valid[b, i] and key_level[b, kk] < key_level[b, i]
            for kk in range(past + new)
        )
        assert bool(has_key[b, q]) == any_allowed
        # Rows without any allowed key keep only their diagonal (finite SDPA), then get zeroed.
        assert bool(cross_mask[b, 0, q, k]) == (allowed or (not any_allowed and k == i))


def test_cross_level_rows_follow_the_level_order(vocab, generator):
    model = tiny_model("gamer", vocab)
    cross = model.model.layers[model.config.cross_layers[0]].cross_attn
    rotary = model.model.rotary_emb
    # behaviors: pv(0) cart(1) buy(3) pv(0) fav(2) buy(3) pad -> levels 0 1 2 0 1 2 (pad 0)
    behavior = torch.tensor([[0, 1, 3, 0, 2, 3, 0]])
    level = torch.tensor([[LEVELS[b] for b in behavior[0]]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    hidden = torch.randn(1, 7, model.config.hidden_size, generator=generator)

    def run(h: torch.Tensor) -> torch.Tensor:
        _, cross_mask, has_key = build_attention_masks(valid, level, level, past_length=0)
        rows = CrossLevelRows.pack(cross_mask, has_key)
        assert rows.index[0].tolist() == [1, 2, 4, 5] and rows.valid.all()  # only rows with a key are computed
        return cross(h, behavior, rotary(h, torch.arange(7)[None]), rows)

    with torch.no_grad():
        out = run(hidden)
        # Lowest-level tokens (0, 3) and the pad (6) have no lower-level key: exactly zero, not an average.
        assert torch.equal(out[0, [0, 3, 6]], torch.zeros(3, model.config.hidden_size))
        assert out[0, [1, 2, 4, 5]].abs().sum(-1).gt(0).all()

        def changes_row(row: int, perturbed: int) -> bool:
            h = hidden.clone()
            h[0, perturbed] += 3 * torch.randn(model.config.hidden_size, generator=generator)
            return not torch.allclose(run(h)[0, row], out[0, row], atol=1e-6)

        # Top-level token 5 (buy) sees earlier pv/cart/pv/fav (positions 0, 1, 3, 4) ...
        assert all(changes_row(5, j) for j in (0, 1, 3, 4))
        # ... but not the earlier buy (same level) nor the padding.
        assert not changes_row(5, 2) and not changes_row(5, 6)
        # Level-1 token 4 (fav) sees only the level-0 tokens before it, not cart (equal level) nor buy.
        assert changes_row(4, 0) and changes_row(4, 3)
        assert not any(changes_row(4, j) for j in (1, 2, 5))
        # Level-1 token 1 (cart) never sees a later level-0 token.
        assert changes_row(1, 0) and not changes_row(1, 3)


def test_cross_attention_output_is_zero_for_lowest_level_tokens_inside_the_model(vocab, generator):
    model = tiny_model("gamer", vocab)
    batch = make_batch([random_row(vocab, 4, generator, behaviors=[0, 1, 0, 3]), random_row(vocab, 2, generator)])
    captured = []
    hooks = [
        model.model.layers[i].cross_attn.register_forward_hook(lambda m, args, out: captured.append(out))
        for i in model.config.cross_layers
    ]
    with torch.no_grad():
        model(**batch.inputs())
    for hook in hooks:
        hook.remove()
    assert len(captured) == len(model.config.cross_layers)
    # A row is empty when no earlier real token has a lower level (all pv tokens, pads, and e.g. a cart
    # block with no pv before it).
    big = 10**6
    min_level_so_far = torch.where(batch.attention_mask.bool(), batch.level, big).cummin(dim=1).values
    empty = (min_level_so_far >= batch.level) | (batch.attention_mask == 0)
    assert empty.any() and (~empty).any()
    for out in captured:
        assert torch.equal(out[empty], torch.zeros_like(out[empty]))
        assert out[~empty].abs().sum(-1).gt(0).all()


def test_behavior_injection_touches_code_tokens_only(vocab, generator):
    # Without cross layers, a token's behavior id reaches the model only through FFN injection.
    model = tiny_model("gamer", vocab, cross_layers=[])
    batch = make_batch([random_row(vocab, 3, generator, behaviors=[0, 1, 3])])
    behavior_token = batch.slot == 0
    with torch.no_grad():
        reference = model(**batch.inputs()).logits
        changed = batch.inputs()
        changed["behavior"] = torch.where(behavior_token, 2, batch.behavior)  # behavior tokens only
        assert_close(model(**changed).logits, reference, atol=0, rtol=0)
        changed["behavior"] = torch.where(behavior_token, batch.behavior, 2)  # code tokens only
        assert not torch.allclose(model(**changed).logits, reference, atol=1e-4)


def test_gamer_cache_holds_self_cross_and_level_state(vocab, generator):
    model = tiny_model("gamer", vocab)
    batch = make_batch([random_row(vocab, 2, generator), random_row(vocab, 1, generator)], pad_side="left")
    with torch.no_grad():
        cache = model(**batch.inputs(), use_cache=True).cache
    config = model.config
    assert isinstance(cache, GamerCache)
    assert len(cache.layers) == config.num_hidden_layers + len(config.cross_layers) + 1
    length = batch.input_ids.shape[1]
    assert all(layer.keys.shape[2] == length for layer in cache.layers)
    assert torch.equal(cache.layers[cache.meta_index].keys[:, 0, :, 0], batch.level)
    cache.batch_repeat_interleave(3)
    assert all(layer.keys.shape[0] == 6 for layer in cache.layers)
    cache.reorder_cache(torch.tensor([5, 4, 3, 2, 1, 0]))
    assert torch.equal(cache.layers[cache.meta_index].keys[:, 0, :, 0], batch.level.repeat_interleave(3, 0).flip(0))
