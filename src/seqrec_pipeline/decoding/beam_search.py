"""Constrained beam search over the item trie, vectorized over users, behaviors and beams
(docs/design.md#beam-search-and-scoring).

Per batch of users:

1. the history is prefilled **once** (left-padded batch) -> KV cache;
2. fixed-behavior mode: the cache rows are copied once per requested (user, behavior) pair and the behavior
   token is fed (one step for all pairs) -- the history prefill is shared by every behavior of a user;
   behavior-item mode: the behavior token is the first search step (over the allowed behavior tokens);
   single mode: the codes follow the history directly;
3. one step per code level: the trie gives the allowed codes of every beam as a bool mask
   (:class:`~.prefix_index.PrefixIndex`), disallowed codes get -inf, ``topk`` over (beam x code) picks the
   next beams of each query, and the cache rows are reordered with one ``index_select``.

There is no Python loop over beams or users, no callback, and nothing is read back to the host until the
end (the only host reads are shapes, and one read of the prompt lengths per batch, before decoding it).

Scores.  A beam's score is the sum of the per-level log-probabilities of its tokens (the behavior token's
too in behavior-item mode), ranked descending.  Two explicit switches (docs/design.md#beam-search-and-scoring):

- ``temperature`` (default: the model config's ``loss_temperature``, else 1): logits are divided by T before
  the softmax.  The models are trained on ``CE(logits / T)``, so ``softmax(logits / T)`` is the distribution
  they were fitted to; the reference decodes the raw logits (T = 1) -- pass ``temperature=1.0`` to match it.
- ``renormalize`` (default False): False = log-softmax over the whole vocabulary, then drop disallowed codes
  (the reference).  The sum is then the model's joint log-probability of the code sequence, and ranking by
  it is ranking by ``p(item | item in catalog)`` -- the normalizer is the same for every item.  True = softmax
  over the allowed codes only, at every level; the scores then form a distribution over the catalog, but
  locally renormalized scores favor items under prefixes with few continuations ("label bias"), which the
  model's own probabilities do not.  Hence the default.

A model with an item head (the gamer family's ``item_head``) adds ``item_weight x log p_head(item)`` to the final
beams' scores and re-sorts them; the head's logits come from the behavior-token step (or the prefill in single
mode), so nothing is decoded twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel

from ..errors import InputError
from ..vocab import N_SPECIAL
from .common import (
    DecodeResult,
    RankedItems,
    behavior_allowed_mask,
    catalog_of_behavior,
    check_mode,
    check_prompts_nonempty,
    eval_mode,
    n_behaviors_of,
    pad_ranked,
    request_mask,
    resolve_behavior_levels,
)
from .prefix_index import PrefixIndex
from .prompts import PromptBatch
from .stepping import DecodeState, ModelStepper, level_log_probs, resolve_temperature


class _Search:
    """The settings of one ``beam_search`` call and the per-level loop."""

    def __init__(
        self,
        stepper: ModelStepper,
        index: PrefixIndex,
        beam_size: int,
        renormalize: bool,
        temperature: float,
        levels: torch.Tensor,
        item_weight: float = 0.0,
    ) -> None:
        self.stepper, self.index, self.vocab = stepper, index, stepper.vocab
        self.item_weight = item_weight if stepper.has_item_head else 0.0
        self.beam_size, self.renormalize, self.temperature = beam_size, renormalize, temperature
        self.levels = levels  # [n_behaviors] level of each behavior
        self.catalog_of = catalog_of_behavior(index.n_catalogs, n_behaviors_of(self.vocab), stepper.device)
        self.first_code_slot = int(self.vocab.use_behavior_token)

    def feed_behavior(self, state: DecodeState, behavior: torch.Tensor, item_logits: bool = False) -> torch.Tensor:
        """Feed each row its behavior token (slot 0); returns the next-token logits ``[R, V]``."""
        column = behavior[:, None]
        logits = self.stepper.step(state, column + N_SPECIAL, torch.zeros_like(column), column, self.levels[column],
                                   item_logits=item_logits)
        return logits[:, -1]

    def rescore(self, scores: torch.Tensor, items: torch.Tensor, item_logits: torch.Tensor | None):
        """With an item head: each beam's score plus ``item_weight`` x the head's log-probability of its item
        (a product of the two experts), re-sorted; unchanged otherwise."""
        if item_logits is None or self.item_weight == 0.0:
            return scores, items
        item_logp = torch.log_softmax(item_logits.float(), dim=-1).gather(1, items.clamp(min=0))
        scores = torch.where(items >= 0, scores + self.item_weight * item_logp, scores)
        scores, order = scores.sort(dim=1, descending=True, stable=True)
        return scores, items.gather(1, order)

    def codes(
        self,
        state: DecodeState,
        logits: torch.Tensor,
        scores: torch.Tensor,
        nodes: torch.Tensor,
        behavior: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Beam search over the code levels.

        ``logits [Q*k, V]``: next-token logits of the k current beams of each of Q queries (row ``q*k + j``),
        ``scores [Q, k]`` their scores, ``nodes`` / ``behavior [Q*k]`` their trie node and behavior.
        Returns ``scores [Q, k']`` (descending), ``items [Q, k']`` and ``behavior [Q, k']``.
        """
        vocab, index = self.vocab, self.index
        n_queries, k = scores.shape
        offsets = torch.arange(n_queries, device=scores.device)[:, None]
        for level, size in enumerate(vocab.level_sizes):
            start = vocab.level_offsets[level]
            logp = level_log_probs(
                logits, start, start + size, index.allowed(nodes, level), self.renormalize, self.temperature
            )
            candidates = (scores[:, :, None] + logp.view(n_queries, k, size)).view(n_queries, k * size)
            new_k = min(self.beam_size, k * size)
            scores, flat = candidates.topk(new_k, dim=1)
            parent = (flat // size + offsets * k).view(-1)  # row of the beam each new beam extends
            code = (flat % size).view(-1)
            nodes = index.child(nodes[parent], level, code)  # -1 for a disallowed code or a dead parent
            behavior = behavior[parent]
            k = new_k
            if level + 1 < vocab.n_levels:  # the last code is never fed: its logits are not needed
                self.stepper.select(state, parent, same_sources=True)
                tokens = (code + start)[:, None]
                logits = self.stepper.step(
                    state, tokens, torch.full_like(tokens, self.first_code_slot + level),
                    behavior[:, None], self.levels[behavior][:, None],
                )[:, -1]  # fmt: skip
        return scores, index.item_of(nodes).view(n_queries, k), behavior.view(n_queries, k)


def beam_search(
    model: PreTrainedModel,
    prompts: PromptBatch,
    index: PrefixIndex,
    *,
    mode: str = "fixed_behavior",
    behaviors: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    behavior_levels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    beam_size: int = 20,
    top_k: int | None = None,
    batch_size: int = 64,
    renormalize: bool = False,
    temperature: float | None = None,
    allowed_behaviors: Sequence[int] | None = None,
    item_weight: float | None = None,
) -> DecodeResult:
    """Constrained beam search of the top items for every prompt (history) in ``prompts``.

    Args:
        model: any model of ``models/generative`` (any device; put into eval mode for the call).
        prompts: left-padded histories without the target behavior token (:func:`~.prompts.build_prompts`).
        index: the trie of the SID table, on the model's device; one catalog, or one per behavior.
        mode: ``"fixed_behavior"`` (the prompt is followed by a given behavior token; per-behavior results),
            ``"behavior_item"`` (the model generates the behavior token, then the codes) or ``"single"`` (no
            behavior tokens in the vocabulary).
        behaviors: fixed-behavior mode only: None = every behavior for every user, a list of behavior indices,
            or a bool mask ``[n_users, n_behaviors]`` of the pairs to decode.
        behavior_levels: level of each behavior (``gamer`` reads it for the generated tokens; required for a
            multi-behavior ``gamer``).
        beam_size: beams per (user, behavior) query.
        top_k: length of the returned lists (default ``beam_size``; must be <= ``beam_size``).
        batch_size: users per prefill batch (fixed mode decodes ``batch_size x behaviors x beam_size`` rows).
        renormalize / temperature: score normalization, see the module docstring (defaults: full-vocabulary
            log-softmax as the reference; T = the model's ``loss_temperature``).
        allowed_behaviors: behavior-item mode: behaviors the model may generate (default all; behaviors with
            an empty catalog are never generated).
        item_weight: models with an item head, fixed-behavior and single modes: the final beams are ranked by
            ``score + item_weight * log p_head(item)`` (default: the config's ``item_score_weight``; 0: the codes'
            score alone).

    Returns a :class:`~.common.DecodeResult` of CPU tensors.
    """
    stepper = ModelStepper(model)
    vocab = stepper.vocab
    check_mode(mode, vocab)
    top_k = beam_size if top_k is None else top_k
    if not 1 <= top_k <= beam_size:
        raise InputError(f"need 1 <= top_k <= beam_size, got top_k={top_k}, beam_size={beam_size}")
    if tuple(index.level_sizes) != tuple(vocab.level_sizes):
        raise InputError(f"index level sizes {index.level_sizes} differ from the vocabulary's {vocab.level_sizes}")
    if index.device != stepper.device:
        raise InputError(f"the prefix index is on {index.device}, the model on {stepper.device}: use index.to(...)")
    n_users, n_behaviors, device = len(prompts), n_behaviors_of(vocab), stepper.device
    levels = resolve_behavior_levels(model, behavior_levels, n_behaviors)
    if item_weight is None:
        item_weight = float(getattr(model.config, "item_score_weight", 0.0))
    search = _Search(stepper, index, beam_size, renormalize, resolve_temperature(model, temperature), levels,
                     item_weight)
    check_prompts_nonempty(model, prompts, mode)

    with eval_mode(model):
        if mode == "fixed_behavior":
            requested = request_mask(behaviors, n_users, n_behaviors)
            return _fixed_behavior(search, prompts, requested, top_k, batch_size)
        n_cols = n_behaviors
        allowed = behavior_allowed_mask(allowed_behaviors, index.catalog_sizes, n_cols, device)
        out_items = torch.full((n_users, top_k), -1, dtype=torch.long, device=device)
        out_scores = torch.full((n_users, top_k), float("-inf"), device=device)
        out_behaviors = torch.full((n_users, top_k), -1, dtype=torch.long, device=device)
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            state, logits = stepper.prefill(prompts.rows(slice(start, stop)),
                                            item_logits=mode == "single" and search.item_weight != 0.0)
            item_logits = state.item_logits
            n = stop - start
            if mode == "behavior_item":
                behavior_logp = level_log_probs(
                    logits, N_SPECIAL, N_SPECIAL + n_cols, allowed.expand(n, -1), renormalize, search.temperature
                )
                scores, behavior = behavior_logp.topk(min(beam_size, n_cols), dim=1)  # [n, k_b]
                stepper.select(state, torch.arange(n, device=device).repeat_interleave(scores.shape[1]),
                               same_sources=True)  # one block of k_b rows per user: the history stays shared
                behavior = behavior.view(-1)
                logits = search.feed_behavior(state, behavior)
                nodes = index.roots(search.catalog_of[behavior])
                nodes = torch.where(torch.isfinite(scores.view(-1)), nodes, -1)  # disallowed behavior: dead
            else:  # single: the first code follows the history
                scores = torch.zeros(n, 1, device=device)
                behavior = torch.zeros(n, dtype=torch.long, device=device)
                nodes = index.roots(search.catalog_of[behavior])
            scores, items, behavior = search.codes(state, logits, scores, nodes, behavior)
            if mode == "single":
                scores, items = search.rescore(scores, items, item_logits)
            behavior = torch.where(items >= 0, behavior, -1)
            scores, items, behavior = pad_ranked(scores, (items, -1), (behavior, -1), top_k=top_k)
            out_items[start:stop], out_scores[start:stop], out_behaviors[start:stop] = items, scores, behavior

    items, scores, behaviors_out = out_items.cpu(), out_scores.cpu(), out_behaviors.cpu()
    result = DecodeResult(mode, items=items, scores=scores, behaviors=behaviors_out)
    if mode == "single":
        result.by_behavior[0] = RankedItems(items, scores, torch.ones(n_users, dtype=torch.bool))
    return result


def _fixed_behavior(
    search: _Search, prompts: PromptBatch, requested: np.ndarray, top_k: int, batch_size: int
) -> DecodeResult:
    """Fixed-behavior mode: one shared prefill per user, then one search per requested (user, behavior)."""
    stepper, device = search.stepper, search.stepper.device
    n_users, n_behaviors = requested.shape
    out_items = torch.full((n_users, n_behaviors, top_k), -1, dtype=torch.long, device=device)
    out_scores = torch.full((n_users, n_behaviors, top_k), float("-inf"), device=device)
    for start in range(0, n_users, batch_size):
        stop = min(start + batch_size, n_users)
        pair_user, pair_behavior = np.nonzero(requested[start:stop])  # host-side request, not device data
        if len(pair_user) == 0:
            continue
        # Host -> device copies first, so they do not wait behind this batch's forwards.
        pair_user = torch.from_numpy(pair_user).to(device)
        behavior = torch.from_numpy(pair_behavior).to(device)
        state, _ = stepper.prefill(prompts.rows(slice(start, stop)))
        stepper.select(state, pair_user)  # the history cache, once per requested behavior
        logits = search.feed_behavior(state, behavior, item_logits=search.item_weight != 0.0)
        item_logits = state.item_logits
        scores = torch.zeros(len(behavior), 1, device=device)
        nodes = search.index.roots(search.catalog_of[behavior])
        scores, items, _ = search.codes(state, logits, scores, nodes, behavior)
        scores, items = search.rescore(scores, items, item_logits)
        scores, items = pad_ranked(scores, (items, -1), top_k=top_k)
        out_items[start + pair_user, behavior] = items
        out_scores[start + pair_user, behavior] = scores

    items, scores = out_items.cpu(), out_scores.cpu()
    evaluated = torch.from_numpy(requested)
    by_behavior = {
        b: RankedItems(items[:, b], scores[:, b], evaluated[:, b]) for b in range(n_behaviors) if requested[:, b].any()
    }
    result = DecodeResult("fixed_behavior", by_behavior=by_behavior)
    if len(by_behavior) == 1:
        (b, ranked), = by_behavior.items()
        result.items, result.scores = ranked.items, ranked.scores
        result.behaviors = torch.where(ranked.items >= 0, b, -1)
    return result
