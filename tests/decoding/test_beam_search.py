"""Constrained beam search against the exact full-catalog scorer, and its invariants, for every model type; the
gamer family's item head (its loss, its rescoring of the final beams, its checkpoint).

Exactness needs a beam wide enough to keep every prefix: with level sizes (3, 4, 12), the beam holds all
12 two-code prefixes of one (user, behavior) query (48 = 4 behaviors x 12 in behavior-item mode), so the last
step ranks every catalog item and the top-K must equal the scorer's exactly.  Narrower beams are only checked
for what always holds (valid, distinct, correctly scored, never better than exact).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from seqrec_pipeline.decoding import PrefixIndex, beam_search, build_prompts, exact_topk, score_catalog
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.generative import build_model, load_model
from seqrec_pipeline.models.generative.common import block_items, item_keys
from seqrec_pipeline.models.generative.factory import build_config
from seqrec_pipeline.vocab import TokenVocab

from .helpers import BEHAVIORS, LEVELS, MODELS, random_catalogs, random_codes, random_histories, tiny_model

SIZES = (3, 4, 12)
N_ITEMS = 100
TOL = dict(atol=1e-4, rtol=1e-4)  # float32 sums of log-probs: kernel blockings differ with the batch shape and the CPU


@pytest.fixture(scope="module")
def vocab() -> TokenVocab:
    return TokenVocab(BEHAVIORS, SIZES)


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return random_codes(SIZES, N_ITEMS, seed=3)


def prompts_for(vocab, codes, lengths, seed=0):
    return build_prompts(random_histories(lengths, len(codes), len(BEHAVIORS), seed), codes, vocab, LEVELS)


def assert_same_ranking(beam, exact, *, behaviors: bool = False):
    assert torch.equal(beam.items, exact.items)
    assert_close(beam.scores, exact.scores, **TOL)
    if behaviors:
        assert torch.equal(beam.behaviors, exact.behaviors)


@pytest.mark.parametrize("name", MODELS)
def test_fixed_behavior_beam_search_is_exact(name, vocab, codes):
    model = tiny_model(name, vocab)
    prompts = prompts_for(vocab, codes, [3, 0, 5, 1, 2])  # user 1 has no history: prompt = behavior token only
    index = PrefixIndex.build(codes, SIZES)
    common = dict(mode="fixed_behavior", behavior_levels=LEVELS)
    beam = beam_search(model, prompts, index, beam_size=12, top_k=10, batch_size=3, **common)
    exact = exact_topk(model, prompts, codes, top_k=10, chunk_rows=512, **common)
    assert sorted(beam.by_behavior) == list(range(len(BEHAVIORS)))
    for b in beam.by_behavior:
        assert_same_ranking(beam.by_behavior[b], exact.by_behavior[b])
        assert torch.isfinite(beam.by_behavior[b].scores).all()
    assert beam.items is None  # several behaviors: results are per behavior


@pytest.mark.parametrize("name", MODELS)
def test_behavior_item_beam_search_is_exact(name, vocab, codes):
    """The model generates the behavior token too; behavior-restricted catalogs (one trie per behavior)."""
    model = tiny_model(name, vocab)
    prompts = prompts_for(vocab, codes, [3, 4, 1, 2], seed=1)
    catalogs = random_catalogs(len(BEHAVIORS), N_ITEMS, seed=4)
    index = PrefixIndex.build(codes, SIZES, catalogs=catalogs)
    common = dict(mode="behavior_item", behavior_levels=LEVELS)
    beam = beam_search(model, prompts, index, beam_size=48, top_k=15, batch_size=4, **common)
    exact = exact_topk(model, prompts, codes, catalogs=catalogs, top_k=15, **common)
    assert_same_ranking(beam, exact, behaviors=True)
    # Every (behavior, item) entry exists in that behavior's catalog, and no entry repeats.
    assert catalogs[beam.behaviors, beam.items].all()
    pairs = beam.behaviors * N_ITEMS + beam.items
    assert all(len(set(row)) == len(row) for row in pairs.tolist())
    assert torch.equal(beam.predicted_behavior, beam.behaviors[:, 0])


@pytest.mark.parametrize("name", MODELS)
def test_single_mode_beam_search_is_exact(name):
    vocab = TokenVocab(("item",), (4, 5, 10), use_behavior_token=False)
    codes = random_codes((4, 5, 10), 150, seed=5)
    model = tiny_model(name, vocab)
    prompts = build_prompts(random_histories([2, 4, 1], 150, 1, seed=2), codes, vocab)
    index = PrefixIndex.build(codes, (4, 5, 10))
    beam = beam_search(model, prompts, index, mode="single", beam_size=20, top_k=10)
    exact = exact_topk(model, prompts, codes, mode="single", top_k=10)
    assert_same_ranking(beam, exact)
    assert torch.equal(beam.by_behavior[0].items, beam.items)
    assert (beam.behaviors == 0).all()


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_normalization_switches(renormalize, temperature, vocab, codes):
    model = tiny_model("qwen3", vocab)
    prompts = prompts_for(vocab, codes, [2, 3, 1])
    catalogs = random_catalogs(len(BEHAVIORS), N_ITEMS, seed=6)
    index = PrefixIndex.build(codes, SIZES, catalogs=catalogs)
    common = dict(mode="fixed_behavior", behaviors=[1, 3], behavior_levels=LEVELS, renormalize=renormalize,
                  temperature=temperature)  # fmt: skip
    beam = beam_search(model, prompts, index, beam_size=12, top_k=12, **common)
    exact = exact_topk(model, prompts, codes, catalogs=catalogs, top_k=12, **common)
    for b in (1, 3):
        assert_same_ranking(beam.by_behavior[b], exact.by_behavior[b])
    # Renormalized scores are a distribution over the behavior's catalog; full-vocabulary ones leave mass
    # on tokens outside the trie (the reference's scores).
    scores = score_catalog(model, prompts, codes, catalogs=catalogs, **common)[:, [1, 3]]
    total = torch.logsumexp(scores, dim=-1)
    if renormalize:
        assert_close(total, torch.zeros_like(total), atol=1e-5, rtol=0)
    else:
        assert (total < -1e-3).all()


def test_default_temperature_is_the_training_temperature(vocab, codes):
    model = tiny_model("gamer", vocab)
    assert model.config.loss_temperature == 0.7
    prompts = prompts_for(vocab, codes, [2, 3])
    index = PrefixIndex.build(codes, SIZES)
    common = dict(behaviors=[3], behavior_levels=LEVELS, beam_size=12)
    default = beam_search(model, prompts, index, **common)
    assert torch.equal(default.scores, beam_search(model, prompts, index, temperature=0.7, **common).scores)
    assert not torch.allclose(default.scores, beam_search(model, prompts, index, temperature=1.0, **common).scores)


@pytest.mark.parametrize("name", MODELS)
def test_narrow_beam_returns_valid_correctly_scored_lists(name):
    """Beam 6 over 300 items of (8, 8, 8): not exhaustive, but every answer must still be sound."""
    vocab = TokenVocab(BEHAVIORS, (8, 8, 8))
    codes = random_codes((8, 8, 8), 300, seed=7)
    model = tiny_model(name, vocab)
    prompts = build_prompts(random_histories([4, 2, 3, 5], 300, 4, seed=3), codes, vocab, LEVELS)
    requested = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=bool)
    catalogs = random_catalogs(4, 300, keep=0.8, seed=8)
    index = PrefixIndex.build(codes, (8, 8, 8), catalogs=catalogs, dense_max_entries=64)  # CSR deep levels
    common = dict(behaviors=requested, behavior_levels=LEVELS)
    beam = beam_search(model, prompts, index, beam_size=6, top_k=5, batch_size=2, **common)
    exact_scores = score_catalog(model, prompts, codes, catalogs=catalogs, **common)
    for b, ranked in beam.by_behavior.items():
        assert torch.equal(ranked.evaluated, torch.from_numpy(requested[:, b]))
        assert (ranked.items[~ranked.evaluated] == -1).all() and torch.isinf(ranked.scores[~ranked.evaluated]).all()
        items, scores = ranked.items[ranked.evaluated], ranked.scores[ranked.evaluated]
        assert (items >= 0).all() and catalogs[b][items].all()  # all exist, in this behavior's catalog
        assert all(len(set(row)) == len(row) for row in items.tolist())  # no item twice per list
        assert (scores[:, :-1] >= scores[:, 1:]).all()  # ranked
        users = torch.nonzero(ranked.evaluated).flatten()
        truth = exact_scores[users, b]
        assert_close(scores, truth.gather(1, items), **TOL)  # each beam score is the item's exact score
        best = truth.topk(5, dim=1).values
        assert (scores <= best + 1e-4).all()  # the k-th found is never better than the true k-th


@pytest.mark.parametrize("name", MODELS)
def test_batch_size_does_not_change_results(name, vocab, codes):
    """Left padding (different widths per batch) and batch composition must not move any result."""
    model = tiny_model(name, vocab)
    prompts = prompts_for(vocab, codes, [5, 0, 1, 3, 2, 4], seed=5)
    index = PrefixIndex.build(codes, SIZES)
    common = dict(behaviors=[0, 2, 3], behavior_levels=LEVELS, beam_size=8, top_k=8)
    results = [beam_search(model, prompts, index, batch_size=size, **common) for size in (1, 4, 6)]
    for other in results[1:]:
        for b in (0, 2, 3):
            assert torch.equal(other.by_behavior[b].items, results[0].by_behavior[b].items)
            assert_close(other.by_behavior[b].scores, results[0].by_behavior[b].scores, **TOL)


def test_behavior_item_respects_allowed_behaviors(vocab, codes):
    model = tiny_model("gamer", vocab)
    prompts = prompts_for(vocab, codes, [3, 1, 2])
    index = PrefixIndex.build(codes, SIZES)
    result = beam_search(model, prompts, index, mode="behavior_item", behavior_levels=LEVELS,
                         allowed_behaviors=[1, 3], beam_size=10)  # fmt: skip
    assert set(result.behaviors.flatten().tolist()) <= {1, 3}
    assert (result.items >= 0).all()
    assert result.by_behavior == {}


def test_fewer_items_than_k_are_padded(vocab):
    codes = np.array([[0, 0, 1], [2, 3, 11], [0, 1, 5]])
    model = tiny_model("qwen3", vocab)
    prompts = build_prompts([[(0, 0)], [(2, 3)]], codes, vocab, LEVELS)
    result = beam_search(model, prompts, PrefixIndex.build(codes, SIZES), behaviors=[3], beam_size=5)
    assert (result.items[:, :3] >= 0).all() and (result.items[:, 3:] == -1).all()
    assert torch.isinf(result.scores[:, 3:]).all() and torch.isfinite(result.scores[:, :3]).all()
    assert (result.behaviors[:, :3] == 3).all() and (result.behaviors[:, 3:] == -1).all()


@pytest.mark.parametrize("name", ["gamer", "tiger", "mbgen"])
def test_history_is_prefilled_once_and_shared_by_behaviors(name, vocab, codes):
    """One history forward per batch, then one single-token step per behavior token / code level."""
    model = tiny_model(name, vocab)
    prompts = prompts_for(vocab, codes, [4, 2, 3])
    calls = []
    target = model.get_encoder() if model.config.is_encoder_decoder else model
    handle = target.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        beam_search(model, prompts, PrefixIndex.build(codes, SIZES), behavior_levels=LEVELS, beam_size=6)
    finally:
        handle.remove()
    if model.config.is_encoder_decoder:  # the encoder runs once; the decoder steps are not counted here
        assert calls == [(3, prompts.input_ids.shape[1])]
        return
    history_length = prompts.input_ids.shape[1]
    n_pairs = 3 * len(BEHAVIORS)
    # prefill (3 users), behavior tokens (12 pairs), then the codes of levels 0 and 1 fed on the beams
    assert calls == [(3, history_length), (n_pairs, 1), (n_pairs * 3, 1), (n_pairs * 6, 1)]


def test_model_mode_is_restored_and_dropout_is_off(vocab, codes):
    model = tiny_model("gamer", vocab, resid_dropout=0.5, attention_dropout=0.5)
    prompts = prompts_for(vocab, codes, [2, 2])
    index = PrefixIndex.build(codes, SIZES)
    expected = beam_search(model, prompts, index, behavior_levels=LEVELS, beam_size=6, behaviors=[2])
    model.train()
    again = beam_search(model, prompts, index, behavior_levels=LEVELS, beam_size=6, behaviors=[2])
    assert model.training
    assert torch.equal(again.items, expected.items)


def test_bad_arguments_are_rejected(vocab, codes):
    model = tiny_model("gamer", vocab)
    prompts = prompts_for(vocab, codes, [2, 0])
    index = PrefixIndex.build(codes, SIZES)
    with pytest.raises(InputError, match="mode 'single'"):
        beam_search(model, prompts, index, mode="single", behavior_levels=LEVELS)
    with pytest.raises(InputError, match="top_k"):
        beam_search(model, prompts, index, behavior_levels=LEVELS, beam_size=4, top_k=5)
    with pytest.raises(InputError, match="behavior_levels"):
        beam_search(model, prompts, index)
    with pytest.raises(InputError, match="level sizes"):
        beam_search(model, prompts, PrefixIndex.build(codes, (3, 4, 13)), behavior_levels=LEVELS)
    with pytest.raises(InputError, match="empty"):  # nothing to predict the behavior token from
        beam_search(model, prompts, index, mode="behavior_item", behavior_levels=LEVELS)
    with pytest.raises(InputError, match="catalogs"):
        beam_search(model, prompts, PrefixIndex.build(codes, SIZES, catalogs=[[0], [1]]), behavior_levels=LEVELS)


# ----------------------------------------------------------------------------------------------------------
# The gamer family's item head: its loss, its place in beam search, its checkpoint
# ----------------------------------------------------------------------------------------------------------


def head_model(name, vocab, codes=None, **overrides):
    """A tiny model with the item head; with ``codes``, its rows are the history items' inputs too."""
    if codes is not None:
        return tiny_model(name, vocab, item_head=True, item_input=True, codes=codes, **overrides)
    return tiny_model(name, vocab, item_head=True, catalog_size=N_ITEMS, **overrides)


def query_item_logp(model, prompts, behavior: int) -> torch.Tensor:
    """The head's log-probabilities after each prompt plus the behavior token, from one plain forward per user."""
    rows = []
    for u in range(len(prompts)):
        p = prompts.rows(slice(u, u + 1))
        keep = p.attention_mask[0].bool()
        column = lambda t, v: torch.cat([t[0][keep], torch.tensor([v])])[None]  # noqa: E731
        out = model(input_ids=column(p.input_ids, 3 + behavior), attention_mask=column(p.attention_mask, 1),
                    slot=column(p.slot, 0), behavior=column(p.behavior, behavior),
                    level=column(p.level, LEVELS[behavior]), session=column(p.session, int(p.session.max()) + 1),
                    return_item_logits=True)
        rows.append(torch.log_softmax(out.item_logits[0].float(), -1))
    return torch.stack(rows)


def test_the_loss_adds_the_weighted_item_cross_entropy(vocab):
    model = head_model("gamer", vocab, item_loss_weight=0.5)
    ids = torch.tensor([[3, 5, 9, 20, 4, 6, 10, 21]])
    meta = dict(slot=torch.tensor([[0, 1, 2, 3] * 2]), behavior=torch.tensor([[0] * 4 + [1] * 4]),
                level=torch.tensor([[0] * 4 + [1] * 4]), session=torch.zeros(1, 8, dtype=torch.long))
    labels = torch.tensor([[-100, 5, 9, 20, -100, 6, 10, 21]])
    item_labels = torch.tensor([[-100, 7, -100, -100, -100, 42, -100, -100]])
    plain = model(input_ids=ids, labels=labels, **meta)
    both = model(input_ids=ids, labels=labels, item_labels=item_labels, **meta)
    hidden = model.model(input_ids=ids, **meta).last_hidden_state
    expected = F.cross_entropy(model.item_head(hidden[0, [0, 4]]), torch.tensor([7, 42]))
    assert_close(both.loss, plain.loss + 0.5 * expected)
    assert plain.item_logits is None
    assert model(input_ids=ids, return_item_logits=True, **meta).item_logits.shape == (1, N_ITEMS)


@pytest.mark.parametrize("item_input", [False, True])
@pytest.mark.parametrize("name", ["gamer", "gamer_session", "qwen3_session"])
def test_beam_search_ranks_by_codes_plus_weighted_item_log_probability(name, item_input, vocab, codes):
    """A beam wide enough to keep every item: the result is the exact code score plus w x the head's log-prob,
    over the whole catalog, re-sorted (with item inputs too: the beam's prefill and steps, the exact scorer's
    chunks and a plain forward see the same items)."""
    model = head_model(name, vocab, codes if item_input else None, item_score_weight=0.7)
    prompts = build_prompts(random_histories([3, 1, 4], N_ITEMS, len(BEHAVIORS), 0), codes, vocab, LEVELS)
    index = PrefixIndex.build(codes, SIZES)
    beam = beam_search(model, prompts, index, beam_size=12, top_k=10, behavior_levels=LEVELS, behaviors=[2])
    plain = beam_search(model, prompts, index, beam_size=12, top_k=12, behavior_levels=LEVELS, behaviors=[2],
                        item_weight=0.0)
    exact = exact_topk(model, prompts, codes, top_k=N_ITEMS, behavior_levels=LEVELS, behaviors=[2], chunk_rows=512)
    full = torch.full((len(prompts), N_ITEMS), float("-inf"))
    full.scatter_(1, exact.items, exact.scores)
    with torch.no_grad():
        fused = full + 0.7 * query_item_logp(model, prompts, behavior=2)
    # the beam keeps the 12 best items by code score; among them the fused score decides
    kept = torch.full_like(fused, float("-inf")).scatter(1, plain.items, fused.gather(1, plain.items))
    scores, items = kept.topk(10, dim=1)
    assert torch.equal(beam.items, items)
    assert_close(beam.scores, scores, atol=1e-4, rtol=1e-5)
    assert not torch.equal(beam.items, plain.items[:, :10])  # the head changes the order here


def test_single_mode_uses_the_head_after_the_history():
    vocab = TokenVocab(("item",), (4, 5, 10), use_behavior_token=False)
    codes = random_codes((4, 5, 10), N_ITEMS, seed=5)
    model = head_model("gamer", vocab)
    prompts = build_prompts(random_histories([2, 4, 1], N_ITEMS, 1, seed=2), codes, vocab)
    index = PrefixIndex.build(codes, (4, 5, 10))
    beam = beam_search(model, prompts, index, mode="single", beam_size=20, top_k=20)
    plain = beam_search(model, prompts, index, mode="single", beam_size=20, top_k=20, item_weight=0.0)
    with torch.no_grad():
        head = torch.log_softmax(model(**prompts.model_inputs(), return_item_logits=True).item_logits.float(), -1)
    expected = plain.scores + head.gather(1, plain.items)
    assert_close(beam.scores, expected.sort(dim=1, descending=True).values, atol=1e-4, rtol=1e-5)
    assert sorted(beam.items[0].tolist()) == sorted(plain.items[0].tolist())


def test_the_head_needs_the_catalog_size_and_the_gamer_family(vocab):
    with pytest.raises(ValueError, match="catalog size"):
        build_model("gamer", vocab, item_head=True)
    with pytest.raises(ValueError, match="derived"):  # the catalog size comes from the SID table, not the yml
        build_model("gamer", vocab, item_head=True, catalog_size=5, n_items=5)
    with pytest.raises(ValueError, match="unknown qwen3 config fields"):
        build_model("qwen3", vocab, item_head=True, catalog_size=5)


def test_an_auto_head_is_on_up_to_the_catalog_limit_and_other_values_are_refused(vocab):
    auto = {"item_head": "auto", "item_head_max_items": 7}
    assert build_config("gamer", vocab, catalog_size=7, **auto).item_head is True
    too_large = build_config("gamer", vocab, catalog_size=8, **auto)
    assert too_large.item_head is False and too_large.n_items == 0
    assert not hasattr(too_large, "item_head_max_items")  # a choice of the build, not a field of the model
    assert build_config("gamer", vocab, catalog_size=8, item_head=True, item_head_max_items=7).item_head is True
    with pytest.raises(ValueError, match="item_head must be true, false or auto, got 'maybe'"):
        build_config("gamer", vocab, catalog_size=5, item_head="maybe")
    for limit in (None, -1, "many", True):  # auto without a usable limit is refused, not guessed
        with pytest.raises(ValueError, match=f"item_head: auto needs item_head_max_items.*got {limit!r}"):
            build_config("gamer", vocab, catalog_size=5, item_head="auto", item_head_max_items=limit)
    with pytest.raises(ValueError, match="unknown qwen3 config fields"):  # only the family with a head takes it
        build_config("qwen3", vocab, item_head_max_items=7)


@pytest.mark.parametrize("item_input", [False, True])
def test_a_saved_model_keeps_its_head(item_input, vocab, codes, tmp_path):
    model = head_model("gamer", vocab, codes if item_input else None)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    if item_input:  # the catalog's keys travel with the weights
        assert torch.equal(loaded.catalog_keys, model.catalog_keys)
        assert torch.equal(loaded.catalog_order, model.catalog_order)
        assert bool((loaded.catalog_keys >= 0).all())
    prompts = build_prompts(random_histories([3, 2], N_ITEMS, len(BEHAVIORS), 1), codes, vocab, LEVELS)
    index = PrefixIndex.build(codes, SIZES)
    first = beam_search(model, prompts, index, beam_size=12, behavior_levels=LEVELS)
    again = beam_search(loaded, prompts, index, beam_size=12, behavior_levels=LEVELS)
    assert loaded.config.n_items == N_ITEMS and loaded.item_head is not None
    for b in first.by_behavior:
        assert torch.equal(first.by_behavior[b].items, again.by_behavior[b].items)


# ----------------------------------------------------------------------------------------------------------
# Item inputs: the head's rows added at each history item's last code
# ----------------------------------------------------------------------------------------------------------


def test_each_history_item_is_found_at_its_last_code_and_nowhere_else(vocab, codes):
    histories = [np.array([[7, 0], [42, 3], [7, 1]]), np.array([[99, 2]])]
    prompts = build_prompts(histories, codes, vocab, LEVELS)
    keys = torch.sort(item_keys(torch.from_numpy(np.asarray(vocab.code_tokens(codes))), vocab.size))
    found = block_items(prompts.input_ids, prompts.slot, *keys, len(SIZES), vocab.block_size - 1, vocab.size)
    expected = torch.full_like(found, -1)  # blocks [behavior, c1, c2, c3], left-padded
    expected[0, [3, 7, 11]] = torch.tensor([7, 42, 7])
    expected[1, 11] = 99
    assert torch.equal(found, expected)
    # a code sequence that is no catalog item (the SID table's first item with its last code changed) is not found
    unknown = prompts.input_ids.clone()
    taken = {tuple(c) for c in codes.tolist()}
    last = next(c for c in range(SIZES[-1]) if (*codes[7][:-1], c) not in taken)
    unknown[0, 3] = int(vocab.code_tokens(np.array([[*codes[7][:-1], last]]))[0, -1])
    assert int(block_items(unknown, prompts.slot, *keys, len(SIZES), vocab.block_size - 1, vocab.size)[0, 3]) == -1


def test_item_inputs_add_the_heads_row_of_each_history_item(vocab, codes):
    model = head_model("gamer", vocab, codes)
    prompts = prompts_for(vocab, codes, [3, 1], seed=4)
    items = block_items(prompts.input_ids, prompts.slot, model.catalog_keys, model.catalog_order, len(SIZES),
                        vocab.block_size - 1, vocab.size)
    extra = model.item_head.weight[items.clamp(min=0)] * (items >= 0)[..., None]
    with torch.no_grad():
        logits = model(**prompts.model_inputs()).logits
        by_hand = model.lm_head(model.model(**prompts.model_inputs(), input_embeds_extra=extra).last_hidden_state)
        plain = model.lm_head(model.model(**prompts.model_inputs()).last_hidden_state)
    assert_close(logits, by_hand)
    assert (logits - plain).abs().max() > 1e-3  # the items change the model's output


def test_item_inputs_need_the_head_and_the_sid_table(vocab, codes):
    with pytest.raises(ValueError, match="needs item_head"):
        build_model("gamer", vocab, item_input=True)
    with pytest.raises(ValueError, match="SID table"):
        build_model("gamer", vocab, item_head=True, item_input=True, catalog_size=N_ITEMS)
    with pytest.raises(ValueError, match="item_input must be true, false or auto, got 'yes'"):
        build_config("gamer", vocab, catalog_size=5, item_head=True, item_input="yes")
    assert build_config("gamer", vocab, catalog_size=5, item_head=True, item_input="auto").item_input is True
    too_large = build_config("gamer", vocab, catalog_size=8, item_head="auto", item_head_max_items=7,
                             item_input="auto")
    assert too_large.item_head is False and too_large.item_input is False  # auto follows the head
    with pytest.raises(ValueError, match=r"shape \[100, 3\]"):
        head_model("gamer", vocab, codes).set_item_codes(torch.zeros(N_ITEMS, 2, dtype=torch.long))
