"""The exact scorer (the beam search's oracle) against plain full forwards without any cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from seqrec_pipeline.decoding import build_prompts, score_catalog
from seqrec_pipeline.decoding.exact import score_items
from seqrec_pipeline.vocab import BOS, TokenVocab

from .helpers import BEHAVIORS, LEVELS, MODELS, random_codes, random_histories, tiny_model

SIZES = (3, 4, 5)


def full_forward_score(model, vocab, prompts, user: int, behavior: int, item_codes, temperature: float) -> float:
    """log p(c_0..c_{L-1} | history, behavior) from one uncached forward of the whole sequence."""
    row = {name: getattr(prompts, name)[user : user + 1] for name in ("input_ids", "attention_mask", "slot",
                                                                        "behavior", "level", "session")}  # fmt: skip
    block = torch.tensor([[vocab.behavior_token(behavior), *vocab.code_tokens(item_codes).tolist()]])
    n = block.shape[1]
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder_input_ids = torch.cat([torch.tensor([[BOS]]), block[:, :-1]], 1)
            logits = model(input_ids=row["input_ids"], attention_mask=row["attention_mask"], slot=row["slot"],
                           behavior=row["behavior"], decoder_input_ids=decoder_input_ids,
                           decoder_behavior=torch.full_like(decoder_input_ids, behavior)).logits[0, 1:]  # fmt: skip
        else:
            extra = {"input_ids": block, "attention_mask": torch.ones_like(block), "slot": torch.arange(n)[None],
                     "behavior": torch.full_like(block, behavior), "level": torch.full_like(block, LEVELS[behavior]),
                     "session": torch.full_like(block, int(row["session"].max()) + 1)}  # the target: a new session
            inputs = {name: torch.cat([row[name], extra[name]], 1) for name in row}
            logits = model(**inputs).logits[0, -n:-1]  # after the behavior token and codes 0..L-2
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return float(logp.gather(1, block[0, 1:, None]).sum())


@pytest.mark.parametrize("name", MODELS)
def test_exact_scores_equal_uncached_full_forwards(name):
    vocab = TokenVocab(BEHAVIORS, SIZES)
    codes = random_codes(SIZES, 40, seed=9)
    model = tiny_model(name, vocab)
    # Sessions of several events, so the session models' masks and positions matter.
    prompts = build_prompts(random_histories([3, 1, 2], 40, 4, seed=4), codes, vocab, LEVELS,
                            sessions=[[4, 4, 9], [1], [7, 7]])
    scores = score_catalog(model, prompts, codes, behaviors=[0, 3], behavior_levels=LEVELS, temperature=0.8,
                           batch_size=2, chunk_rows=37)  # fmt: skip  (uneven chunks: padding of the last one)
    assert torch.isinf(scores[:, [1, 2]]).all()  # behaviors not requested
    for user in range(3):
        for behavior in (0, 3):
            for item in (0, 17, 39):
                expected = full_forward_score(model, vocab, prompts, user, behavior, codes[item], 0.8)
                assert_close(scores[user, behavior, item].item(), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("renormalize", [False, True])
def test_scores_of_chosen_items_equal_the_catalog_scores(name, renormalize):
    vocab = TokenVocab(BEHAVIORS, SIZES)
    codes = random_codes(SIZES, 40, seed=9)
    model = tiny_model(name, vocab)
    prompts = build_prompts(random_histories([3, 1, 2, 4], 40, 4, seed=4), codes, vocab, LEVELS,
                            sessions=[[4, 4, 9], [1], [7, 7], [1, 2, 2, 3]])
    catalog = score_catalog(model, prompts, codes, behaviors=None, behavior_levels=LEVELS, temperature=0.8,
                            renormalize=renormalize)
    # queries (user, behavior) in any order, users without pairs, repeated items, uneven batches of users
    query_user, query_behavior = np.array([2, 0, 0, 3, 1]), np.array([1, 3, 0, 2, 0])
    pair_query = np.array([0, 0, 1, 2, 1, 3, 3, 3, 0])
    pair_item = np.array([5, 39, 0, 17, 0, 1, 2, 3, 5])
    scores = score_items(model, prompts, codes, query_user, query_behavior, pair_query, pair_item,
                         behavior_levels=LEVELS, temperature=0.8, renormalize=renormalize, chunk_rows=4)
    expected = catalog[query_user[pair_query], query_behavior[pair_query], pair_item].double().numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=1e-5)
