"""Prompt batches: left padding, token layout and metadata."""

from __future__ import annotations

import numpy as np
import pytest

from seqrec_pipeline.decoding import build_prompts
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.vocab import TokenVocab


@pytest.fixture
def vocab() -> TokenVocab:
    return TokenVocab(("pv", "buy"), (3, 4))  # pad 0, bos 1, eos 2, behaviors 3-4, level 0: 5-7, level 1: 8-11


CODES = np.array([[0, 1], [2, 3], [1, 0]])


def test_layout_and_metadata_by_hand(vocab):
    prompts = build_prompts([[(1, 0), (2, 1)], [(0, 1)], []], CODES, vocab, behavior_levels=[0, 5])
    assert prompts.input_ids.tolist() == [
        [3, 7, 11, 4, 6, 8],
        [0, 0, 0, 4, 5, 9],
        [0, 0, 0, 0, 0, 0],
    ]
    assert prompts.attention_mask.tolist() == [[1] * 6, [0, 0, 0, 1, 1, 1], [0] * 6]
    assert prompts.slot.tolist() == [[0, 1, 2, 0, 1, 2], [0, 0, 0, 0, 1, 2], [0] * 6]
    assert prompts.behavior.tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0] * 6]
    assert prompts.level.tolist() == [[0, 0, 0, 5, 5, 5], [0, 0, 0, 5, 5, 5], [0] * 6]


def test_truncation_bos_and_row_selection(vocab):
    prompts = build_prompts([np.array([[0, 0], [1, 0], [2, 1]]), np.array([[2, 0]])], CODES, vocab,
                            max_history=2, prepend_bos=True)  # fmt: skip
    assert prompts.input_ids.tolist() == [[1, 3, 7, 11, 4, 6, 8], [0, 0, 0, 1, 3, 6, 8]]
    assert prompts.attention_mask[1].tolist() == [0, 0, 0, 1, 1, 1, 1]
    second = prompts.rows(slice(1, 2))  # columns that are padding in every selected row are dropped
    assert second.input_ids.tolist() == [[1, 3, 6, 8]]
    assert len(second) == 1 and second.slot.shape == (1, 4)


def test_single_behavior_vocabulary_has_code_blocks_only():
    vocab = TokenVocab(("item",), (3, 4), use_behavior_token=False)
    prompts = build_prompts([[(0, 0), (1, 0)], [(2, 0)]], CODES, vocab)
    assert prompts.input_ids.tolist() == [[4, 8, 6, 10], [0, 0, 5, 7]]
    assert prompts.slot.tolist() == [[0, 1, 0, 1], [0, 0, 0, 1]]


def test_bad_histories_are_rejected(vocab):
    with pytest.raises(InputError, match="item indices"):
        build_prompts([[(3, 0)]], CODES, vocab)
    with pytest.raises(InputError, match="behavior indices"):
        build_prompts([[(0, 2)]], CODES, vocab)
    with pytest.raises(InputError, match="behavior_levels"):
        build_prompts([[(0, 0)]], CODES, vocab, behavior_levels=[0])


def test_session_ranks_are_dense_within_the_kept_history(vocab):
    histories = [[(0, 0), (1, 1), (2, 0), (0, 1)], [(1, 0)]]
    prompts = build_prompts(histories, CODES, vocab, max_history=3, sessions=[[3, 5, 5, 8], [2]])
    # user 0 keeps sessions 5, 5, 8 -> ranks 0, 0, 1 (3 tokens per block); user 1: one session, left-padded
    assert prompts.session[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert prompts.session[1].tolist() == [0] * 9
    default = build_prompts(histories, CODES, vocab)  # without sessions: every event its own session
    assert default.session[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(InputError, match="session ids"):
        build_prompts(histories, CODES, vocab, sessions=[[1, 2], [2]])
