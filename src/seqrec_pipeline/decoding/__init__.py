"""Decoding of the generative recommenders: trie-constrained beam search and an exact full-catalog scorer.

No Kedro here: the evaluation nodes call this API.

- :class:`PrefixIndex` -- the item trie of a SID table as tensors (dense masks for shallow levels, CSR for
  deep ones; optionally one catalog per behavior).
- :func:`build_prompts` / :class:`PromptBatch` -- left-padded history prompts with ``slot`` / ``behavior`` /
  ``level`` metadata.
- :func:`beam_search` -- vectorized constrained beam search for ``qwen3`` / ``gamer`` / ``tiger`` in
  ``fixed_behavior``, ``behavior_item`` or ``single`` mode; one history prefill per user, shared by behaviors
  (for ``qwen3`` also shared by the beams inside attention: ``shared_prefix.py``).
- :func:`score_catalog` / :func:`exact_topk` -- log-probability of every catalog item (the test oracle).

Scores are summed log-probabilities; ``renormalize`` (default False = full-vocabulary log-softmax, as the
reference) and ``temperature`` (default the model's ``loss_temperature``) are explicit -- see
``beam_search.py`` for why.

Example::

    index = PrefixIndex.build(codes, vocab.level_sizes, device=device)
    prompts = build_prompts(histories, codes, vocab, behavior_levels)
    result = beam_search(model, prompts, index, mode="fixed_behavior", behaviors=target_mask,
                         behavior_levels=behavior_levels, beam_size=20, top_k=10)
    result.by_behavior[b].items   # [n_users, 10] item indices, -1 = none
"""

from .beam_search import beam_search
from .common import MODES, DecodeResult, RankedItems
from .exact import exact_topk, score_catalog
from .prefix_index import PrefixIndex
from .prompts import PromptBatch, build_prompts
from .stepping import DecodeState, ModelStepper, level_log_probs, resolve_temperature

__all__ = [
    "MODES",
    "DecodeResult",
    "DecodeState",
    "ModelStepper",
    "PrefixIndex",
    "PromptBatch",
    "RankedItems",
    "beam_search",
    "build_prompts",
    "exact_topk",
    "level_log_probs",
    "resolve_temperature",
    "score_catalog",
]
