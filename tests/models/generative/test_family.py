"""The gamer family's variants (docs/design.md#session-models, #moe-variants): session and cross-level masks
against their definitions, session semantics inside the models, cached decoding across blocks, training."""

from __future__ import annotations

import itertools

import pytest
import torch
from genmodel_helpers import DECODERS, SESSION_MODELS, Batch, make_batch, random_row, tiny_model
from torch.testing import assert_close

from seqrec_pipeline.models.generative.masks import TokenMeta, block_ids, build_attention_masks

ATOL = 1e-5


def _random_token_rows(generator: torch.Generator, batch: int, block_size: int, pad_side: str):
    """Rows of item blocks with random sessions (non-decreasing) and levels; returns per token
    (valid, slot, session, level, item) with item = -1 on pads (the block membership by construction)."""
    rows = []
    for _ in range(batch):
        n_items = int(torch.randint(1, 6, (1,), generator=generator))
        steps = torch.randint(0, 2, (n_items,), generator=generator)
        steps[0] = int(torch.randint(0, 3, (1,), generator=generator))  # ranks need not start at 0
        sessions = steps.cumsum(0)
        levels = torch.randint(0, 3, (n_items,), generator=generator)
        item = torch.arange(n_items).repeat_interleave(block_size)
        rows.append(dict(slot=torch.arange(block_size).repeat(n_items), session=sessions[item], level=levels[item],
                         item=item))  # fmt: skip
    length = max(len(r["slot"]) for r in rows) + 2  # every row has pads
    out = {key: torch.zeros(batch, length, dtype=torch.long) for key in ("valid", "slot", "session", "level")}
    out["item"] = torch.full((batch, length), -1)
    for b, row in enumerate(rows):
        n = len(row["slot"])
        where = slice(length - n, length) if pad_side == "left" else slice(0, n)
        out["valid"][b, where] = 1
        for key in ("slot", "session", "level", "item"):
            out[key][b, where] = row[key]
    return out


@pytest.mark.parametrize("pad_side", ["left", "right"])
def test_session_masks_match_a_brute_force_definition(pad_side, generator):
    """Every split into cached + new tokens (prefill, single generation steps, partial blocks) gives the masks
    of the definition: self i->j iff j <= i, j real, and j in i's item block or an earlier session (pads: only
    their diagonal); cross i->j iff j <= i, both real, session[j] < session[i] and level[j] < level[i]."""
    for trial in range(4):
        t = _random_token_rows(generator, batch=3, block_size=3, pad_side=pad_side)
        valid, slot, session, level, item = t["valid"], t["slot"], t["session"], t["level"], t["item"]
        length = valid.shape[1]
        for past in range(length):
            past_block = block_ids(slot[:, :past], valid[:, :past])
            last_block = past_block[:, -1] if past else 0
            new_block = block_ids(slot[:, past:], valid[:, past:], last_block)
            query = TokenMeta(level[:, past:], session[:, past:], new_block)
            key = TokenMeta(level, session, torch.cat([past_block, new_block], 1))
            self_mask, cross_mask, has_key = build_attention_masks(valid, query, key, past)
            for b, q, k in itertools.product(range(3), range(length - past), range(length)):
                i = past + q
                real_i, real_k = bool(valid[b, i]), bool(valid[b, k])
                same_item = real_i and real_k and int(item[b, k]) == int(item[b, i])
                earlier = int(session[b, k]) < int(session[b, i])
                allowed_self = k <= i and real_k and real_i and (same_item or earlier)
                assert bool(self_mask[b, 0, q, k]) == (allowed_self or k == i), (trial, past, b, i, k)

                def cross(kk: int) -> bool:
                    return (kk <= i and real_i and bool(valid[b, kk]) and int(session[b, kk]) < int(session[b, i])
                            and int(level[b, kk]) < int(level[b, i]))  # fmt: skip

                any_key = any(cross(kk) for kk in range(length))
                assert bool(has_key[b, q]) == any_key
                assert bool(cross_mask[b, 0, q, k]) == (cross(k) or (not any_key and k == i)), (trial, past, b, i, k)


def test_causal_masks_are_unchanged_without_sessions(generator):
    """Without session metadata the self-mask is the plain causal + padding mask (qwen3_moe, gamer)."""
    valid = (torch.rand(2, 7, generator=generator) > 0.3).long()
    level = torch.randint(3, (2, 7), generator=generator)
    self_mask, _, _ = build_attention_masks(valid, TokenMeta(level[:, 3:]), TokenMeta(level), 3)
    i = torch.arange(3, 7)[:, None]
    k = torch.arange(7)[None, :]
    expected = ((k <= i) & valid[:, None, :].bool()) | (k == i)
    assert torch.equal(self_mask[:, 0], expected)


def _session_rows(vocab, generator):
    """Row 0: sessions [0, 0, 1, 1, 2] (items 0-1 and 2-3 share a session); row 1 shorter (right pads)."""
    rows = [random_row(vocab, 5, generator, behaviors=[0, 1, 3, 0, 2], sessions=[0, 0, 1, 1, 2]),
            random_row(vocab, 3, generator, sessions=[0, 1, 1])]  # fmt: skip
    return make_batch(rows, pad_side="right")


def _swap_items(batch: Batch, row: int, a: int, b: int, block: int) -> Batch:
    """Copy of ``batch`` with item blocks a and b of ``row`` exchanged (tokens and metadata)."""
    out = Batch(*(x.clone() for x in batch.__dict__.values()))
    sa, sb = slice(a * block, (a + 1) * block), slice(b * block, (b + 1) * block)
    for x, y in zip(out.__dict__.values(), batch.__dict__.values(), strict=True):
        x[row, sa], x[row, sb] = y[row, sb], y[row, sa]
    return out


@pytest.mark.parametrize("name", DECODERS)
def test_a_session_is_an_unordered_set(name, vocab, generator):
    """Session models: swapping the two items of an earlier session leaves every later session's logits
    unchanged, and an item never sees the other items of its own session.  The causal models do see both."""
    model = tiny_model(name, vocab)
    batch = _session_rows(vocab, generator)
    block = vocab.block_size
    with torch.no_grad():
        reference = model(**batch.inputs()).logits
        swapped = model(**_swap_items(batch, 0, 0, 1, block).inputs()).logits  # items 0, 1: session 0
        later = slice(2 * block, 5 * block)  # sessions 1 and 2
        changed = _perturbed_item(batch, 2, vocab, generator)  # item 2: session 1, like item 3
        item3 = slice(3 * block, 4 * block)
        isolated = model(**changed.inputs()).logits
    if name in SESSION_MODELS:
        assert_close(swapped[0, later], reference[0, later], atol=ATOL, rtol=0)
        assert_close(isolated[0, item3], reference[0, item3], atol=ATOL, rtol=0)
        # the next session does see item 2
        assert not torch.allclose(isolated[0, 4 * block :], reference[0, 4 * block :], atol=1e-3)
    else:
        assert not torch.allclose(swapped[0, later], reference[0, later], atol=1e-3)
        assert not torch.allclose(isolated[0, item3], reference[0, item3], atol=1e-3)


def _perturbed_item(batch: Batch, index: int, vocab, generator: torch.Generator) -> Batch:
    """Copy with the code tokens of item ``index`` of row 0 replaced by other codes of the same levels."""
    out = Batch(*(x.clone() for x in batch.__dict__.values()))
    first = 1 if vocab.use_behavior_token else 0
    for level, size in enumerate(vocab.level_sizes):
        position = index * vocab.block_size + first + level
        code = int(out.input_ids[0, position]) - vocab.level_offsets[level]
        out.input_ids[0, position] = (code + 1 + int(torch.randint(size - 1, (1,), generator=generator))) % size
        out.input_ids[0, position] += vocab.level_offsets[level]
    out.labels[0] = torch.where(out.labels[0] >= 0, out.input_ids[0], out.labels[0])
    return out


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("prefill", [1, 5, 9])
def test_cached_decoding_across_blocks_and_sessions_equals_full_forward(name, prefill, vocab, generator):
    """Teacher-forced logits == prefill of ``prefill`` tokens, then one token at a time through the rest of the
    sequence: new blocks and new sessions start inside the cached steps (block ids continue from the cache)."""
    model = tiny_model(name, vocab)
    rows = [random_row(vocab, n, generator, sessions=s) for n, s in ((4, [0, 0, 1, 2]), (3, [0, 1, 1]))]
    batch = make_batch(rows, pad_side="left")
    with torch.no_grad():
        full = model(**batch.inputs()).logits
        out = model(**batch.slice(0, prefill).inputs(), use_cache=True)
        logits, cache = [out.logits], out.cache
        for t in range(prefill, batch.input_ids.shape[1]):
            step = batch.slice(t, t + 1)
            out = model(**{**step.inputs(), "attention_mask": batch.attention_mask[:, : t + 1]}, cache=cache,
                        use_cache=True)  # fmt: skip
            logits.append(out.logits)
    assert_close(torch.cat(logits, 1), full, atol=ATOL, rtol=0)


def test_session_models_need_sessions(vocab, generator):
    batch = make_batch([random_row(vocab, 2, generator)])
    inputs = {k: v for k, v in batch.inputs().items() if k != "session"}
    with pytest.raises(ValueError, match="session"):
        tiny_model("qwen3_session", vocab)(**inputs)


def test_action_experts_follow_behavior_and_slot(vocab, generator):
    """gamer_action_moe: a token's FFN is the expert of its (behavior, slot); changing only the behavior of a
    block's metadata changes its outputs even with no injection layer and no cross-level attention."""
    model = tiny_model("gamer_action_moe", vocab, injection_layers=[])
    batch = make_batch([random_row(vocab, 2, generator, behaviors=[0, 0])])
    other = Batch(*(x.clone() for x in batch.__dict__.values()))
    other.behavior[0, vocab.block_size :] = 1  # second block: pv -> cart experts (level unchanged matters not)
    with torch.no_grad():
        a, b = model(**batch.inputs()).logits, model(**other.inputs()).logits
    assert_close(a[0, : vocab.block_size], b[0, : vocab.block_size], atol=ATOL, rtol=0)
    assert not torch.allclose(a[0, vocab.block_size :], b[0, vocab.block_size :], atol=1e-3)
    plain = tiny_model("qwen3_moe", vocab, injection_layers=[])
    with torch.no_grad():
        assert_close(plain(**batch.inputs()).logits, plain(**other.inputs()).logits, atol=ATOL, rtol=0)
