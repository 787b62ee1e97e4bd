"""Exact full-catalog scoring: the log-probability of every item's code sequence given each history.

The test oracle of the beam search: beam search with a beam wide enough to keep every prefix must
return exactly these top-K lists and scores.  It is also usable on its own for small catalogs.

Per batch of users the history is prefilled once; the cache is then copied to ``chunk`` catalog items per
query, the first L-1 code tokens of every item of the chunk are fed in one forward (the last code needs no
forward: its log-probability comes from the logits after code L-1), and the cache is rewound for the next
chunk.  The normalization switches (``renormalize``, ``temperature``) mean exactly what they mean in
:func:`~.beam_search.beam_search`; the allowed-code sets of ``renormalize=True`` are recomputed here from the
code table (not from the :class:`~.prefix_index.PrefixIndex`), so the oracle does not share the trie code.
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
    request_mask,
    resolve_behavior_levels,
)
from .prefix_index import catalog_item_lists
from .prompts import PromptBatch
from .stepping import DecodeState, ModelStepper, level_log_probs, resolve_temperature


class _CatalogTables:
    """Catalog membership and, per level, the codes allowed after each item's prefix (for ``renormalize``)."""

    def __init__(self, codes: np.ndarray, level_sizes: Sequence[int], catalogs, device: torch.device) -> None:
        n_items, n_levels = codes.shape
        catalog_items = catalog_item_lists(catalogs, n_items)
        member = np.zeros((len(catalog_items), n_items), dtype=bool)
        for c, items in enumerate(catalog_items):
            member[c, items] = True
        self.member = torch.from_numpy(member).to(device)  # [C, n_items]
        self.prefix_group: list[torch.Tensor] = []  # per level: [n_items] id of the item's prefix codes[:, :l]
        self.allowed: list[torch.Tensor] = []  # per level: [C, n_groups, size] codes following that prefix
        for level in range(n_levels):
            if level == 0:
                group = np.zeros(n_items, dtype=np.int64)
            else:
                group = np.unique(codes[:, :level], axis=0, return_inverse=True)[1].reshape(-1)
            allowed = np.zeros((len(catalog_items), int(group.max()) + 1, level_sizes[level]), dtype=bool)
            for c, items in enumerate(catalog_items):
                allowed[c, group[items], codes[items, level]] = True
            self.prefix_group.append(torch.from_numpy(group).to(device))
            self.allowed.append(torch.from_numpy(allowed).to(device))


class _ExactScorer:
    """Scores of every catalog item for a batch of (user, behavior) queries."""

    def __init__(self, stepper: ModelStepper, codes: np.ndarray, tables: _CatalogTables, levels: torch.Tensor,
                 renormalize: bool, temperature: float, chunk_rows: int) -> None:  # fmt: skip
        self.stepper, self.vocab, self.tables, self.levels = stepper, stepper.vocab, tables, levels
        self.renormalize, self.temperature, self.chunk_rows = renormalize, temperature, chunk_rows
        self.codes = torch.from_numpy(codes).to(stepper.device)
        self.catalog_of = catalog_of_behavior(tables.member.shape[0], n_behaviors_of(self.vocab), stepper.device)
        self.first_slot = int(self.vocab.use_behavior_token)

    def log_probs(self, level: int, logits: torch.Tensor, catalog: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[rows, size]`` log-probs of one level; ``catalog`` / ``items [rows]`` select the allowed sets."""
        size, offset = self.vocab.level_sizes[level], self.vocab.level_offsets[level]
        if self.renormalize:
            allowed = self.tables.allowed[level][catalog, self.tables.prefix_group[level][items]]
        else:  # every code counts; items outside the catalog are removed at the end
            allowed = torch.ones(len(logits), size, dtype=torch.bool, device=logits.device)
        return level_log_probs(logits, offset, offset + size, allowed, self.renormalize, self.temperature)

    def score(
        self, state: DecodeState, first_logits: torch.Tensor, base: torch.Tensor, behavior: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``[Q, n_items]``.  ``state`` rows = the Q queries, positioned right before the first code;
        ``first_logits [Q, V]`` the logits there; ``base [Q]`` a score to add (the behavior token's)."""
        vocab, device = self.vocab, self.stepper.device
        n_queries, n_items, n_levels = len(base), len(self.codes), vocab.n_levels
        catalog = self.catalog_of[behavior]
        # Level 0 depends on the query only (every item shares the empty prefix).
        first = self.log_probs(0, first_logits, catalog, torch.zeros_like(catalog))  # [Q, size_0]
        chunk = max(1, min(n_items, self.chunk_rows // n_queries))
        if n_levels > 1:  # row q*chunk + j will hold item j of the chunk for query q
            self.stepper.select(state, torch.arange(n_queries, device=device).repeat_interleave(chunk))
        row_catalog, row_behavior = catalog.repeat_interleave(chunk), behavior.repeat_interleave(chunk)
        code_offsets = torch.tensor(vocab.level_offsets[:-1], device=device)
        slot = torch.arange(self.first_slot, self.first_slot + n_levels - 1, device=device)
        out = torch.empty(n_queries, n_items, device=device)
        for item_start in range(0, n_items, chunk):
            n_chunk = min(chunk, n_items - item_start)
            # The last chunk is padded to full width (repeating its first item) so the row count never changes.
            items = torch.arange(item_start, item_start + chunk, device=device)
            items = torch.where(items < item_start + n_chunk, items, item_start)
            item_codes = self.codes[items]  # [chunk, L]
            total = base[:, None] + first[:, item_codes[:, 0]]  # [Q, chunk]
            if n_levels > 1:
                # Feed codes 0..L-2 of every item in one forward; the logits after code l score code l+1.
                tokens = (code_offsets + item_codes[:, :-1]).repeat(n_queries, 1)  # [Q*chunk, L-1]
                behaviors = row_behavior[:, None].expand_as(tokens)
                logits = self.stepper.step(state, tokens, slot.expand_as(tokens), behaviors, self.levels[behaviors])
                self.stepper.rewind(state, n_levels - 1)
                row_items = items.repeat(n_queries)
                for level in range(1, n_levels):
                    logp = self.log_probs(level, logits[:, level - 1], row_catalog, row_items)
                    picked = logp.gather(1, item_codes[:, level].repeat(n_queries)[:, None])
                    total = total + picked.view(n_queries, chunk)
            out[:, item_start : item_start + n_chunk] = total[:, :n_chunk]
        # Items outside the query's catalog do not exist for it.
        return torch.where(self.tables.member[catalog], out, float("-inf"))


def _start_queries(stepper: ModelStepper, state: DecodeState, logits: torch.Tensor, query_user: torch.Tensor,
                   behavior: torch.Tensor, levels: torch.Tensor, single: bool) -> torch.Tensor:
    """Rows of ``state`` become the queries (prompt rows ``query_user``), positioned before the first code;
    returns the logits there: the prefill's (single mode) or those after the requested behavior token."""
    stepper.select(state, query_user)
    if single:
        return logits[query_user]
    token = behavior[:, None]
    return stepper.step(state, token + N_SPECIAL, torch.zeros_like(token), token, levels[token])[:, -1]


def score_catalog(
    model: PreTrainedModel,
    prompts: PromptBatch,
    codes: np.ndarray,
    *,
    mode: str = "fixed_behavior",
    behaviors: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    catalogs: np.ndarray | Sequence[Sequence[int]] | None = None,
    behavior_levels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    renormalize: bool = False,
    temperature: float | None = None,
    allowed_behaviors: Sequence[int] | None = None,
    batch_size: int = 16,
    chunk_rows: int = 4096,
) -> torch.Tensor:
    """Scores ``[n_users, n_behaviors, n_items]`` (CPU, float32) of every (user, behavior, item).

    A score is the summed log-probability of the item's codes after the history (fixed-behavior mode: after
    the history and the behavior token; behavior-item mode: plus the log-probability of the behavior token
    itself; single mode: ``n_behaviors`` = 1).  -inf for items outside the behavior's catalog, pairs not
    requested (``behaviors`` as in ``beam_search``) and behaviors not allowed.  ``chunk_rows`` bounds the
    decoding rows (queries x items) of one forward.  Other arguments as in ``beam_search``.
    """
    stepper = ModelStepper(model)
    vocab, device = stepper.vocab, stepper.device
    check_mode(mode, vocab)
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] != vocab.n_levels:
        raise InputError(f"codes must have shape [n_items, {vocab.n_levels}], got {codes.shape}")
    n_users, n_items, n_behaviors = len(prompts), len(codes), n_behaviors_of(vocab)
    n_cols = 1 if mode == "single" else n_behaviors
    levels = resolve_behavior_levels(model, behavior_levels, n_behaviors)
    tables = _CatalogTables(codes, vocab.level_sizes, catalogs, device)
    scorer = _ExactScorer(stepper, codes, tables, levels, renormalize, resolve_temperature(model, temperature),
                          chunk_rows)  # fmt: skip
    if mode == "fixed_behavior":
        requested = request_mask(behaviors, n_users, n_behaviors)
    else:
        requested = np.ones((n_users, n_cols), dtype=bool)
    if mode == "behavior_item":
        sizes = tables.member.sum(dim=1).tolist()
        allowed_behavior = behavior_allowed_mask(allowed_behaviors, sizes, n_behaviors, device)
    check_prompts_nonempty(model, prompts, mode)
    out = torch.full((n_users, n_cols, n_items), float("-inf"), device=device)

    with eval_mode(model):
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            query_user, query_col = (torch.from_numpy(a).to(device) for a in np.nonzero(requested[start:stop]))
            if len(query_user) == 0:
                continue
            state, logits = stepper.prefill(prompts.rows(slice(start, stop)))
            base = torch.zeros(len(query_user), device=device)
            if mode == "behavior_item":
                behavior_logp = level_log_probs(
                    logits, N_SPECIAL, N_SPECIAL + n_behaviors, allowed_behavior.expand(len(logits), -1),
                    renormalize, scorer.temperature,
                )  # fmt: skip
                base = behavior_logp[query_user, query_col]
            behavior = torch.zeros_like(query_col) if mode == "single" else query_col
            first_logits = _start_queries(stepper, state, logits, query_user, behavior, levels, mode == "single")
            out[start + query_user, query_col] = scorer.score(state, first_logits, base, behavior)
    return out.cpu()


def exact_topk(
    model: PreTrainedModel,
    prompts: PromptBatch,
    codes: np.ndarray,
    *,
    mode: str = "fixed_behavior",
    top_k: int = 10,
    behaviors: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    **kwargs,
) -> DecodeResult:
    """The exact top-``top_k`` lists, in the same :class:`~.common.DecodeResult` form as ``beam_search``.

    Keyword arguments as :func:`score_catalog`.  Items whose score is -inf are never returned (-1 instead).
    """
    scores = score_catalog(model, prompts, codes, mode=mode, behaviors=behaviors, **kwargs)
    n_users, n_cols, n_items = scores.shape
    if mode == "behavior_item":
        flat_scores, flat = scores.reshape(n_users, -1).topk(min(top_k, n_cols * n_items), dim=1)
        items, behavior = flat % n_items, flat // n_items
        dead = torch.isinf(flat_scores)
        items, behavior = items.masked_fill(dead, -1), behavior.masked_fill(dead, -1)
        result = DecodeResult(mode, items=_pad(items, top_k, -1), scores=_pad(flat_scores, top_k, float("-inf")),
                              behaviors=_pad(behavior, top_k, -1))  # fmt: skip
        return result
    top_scores, items = scores.topk(min(top_k, n_items), dim=2)
    items = items.masked_fill(torch.isinf(top_scores), -1)
    top_scores, items = _pad(top_scores, top_k, float("-inf")), _pad(items, top_k, -1)
    if mode == "single":
        result = DecodeResult(mode, items=items[:, 0], scores=top_scores[:, 0])
        result.behaviors = torch.where(result.items >= 0, 0, -1)
        result.by_behavior[0] = RankedItems(result.items, result.scores, torch.ones(n_users, dtype=torch.bool))
        return result
    requested = torch.from_numpy(request_mask(behaviors, n_users, n_cols))
    by_behavior = {
        b: RankedItems(items[:, b], top_scores[:, b], requested[:, b]) for b in range(n_cols) if requested[:, b].any()
    }
    result = DecodeResult(mode, by_behavior=by_behavior)
    if len(by_behavior) == 1:
        (b, ranked), = by_behavior.items()
        result.items, result.scores = ranked.items, ranked.scores
        result.behaviors = torch.where(ranked.items >= 0, b, -1)
    return result


def _pad(t: torch.Tensor, width: int, fill) -> torch.Tensor:
    """Pad the last axis of ``t`` to ``width`` with ``fill``."""
    missing = width - t.shape[-1]
    return t if missing <= 0 else torch.cat([t, t.new_full((*t.shape[:-1], missing), fill)], dim=-1)


def score_items(
    model: PreTrainedModel,
    prompts: PromptBatch,
    codes: np.ndarray,
    query_user: np.ndarray,
    query_behavior: np.ndarray,
    pair_query: np.ndarray,
    pair_item: np.ndarray,
    *,
    behavior_levels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    renormalize: bool = False,
    temperature: float | None = None,
    chunk_rows: int = 4096,
) -> np.ndarray:
    """Exact log-probabilities (float64 ``[n_pairs]``) of chosen items: pair ``j`` scores item ``pair_item[j]``
    for query ``pair_query[j]`` = (prompt row ``query_user[q]``, requested behavior ``query_behavior[q]``), as
    :func:`score_catalog` scores it (fixed-behavior mode; single mode when the vocabulary has no behavior token).

    Used for candidates outside the beam, e.g. a user's history items.  Users are taken in batches whose pairs
    fit ``chunk_rows`` decoding rows; each batch prefills its histories once and feeds every pair's first L-1
    codes in one forward.  ``renormalize=True`` renormalizes over the codes that follow the item's prefix in the
    whole code table (no per-behavior catalogs here).
    """
    stepper = ModelStepper(model)
    vocab, device = stepper.vocab, stepper.device
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] != vocab.n_levels:
        raise InputError(f"codes must have shape [n_items, {vocab.n_levels}], got {codes.shape}")
    query_user, query_behavior = np.asarray(query_user, np.int64), np.asarray(query_behavior, np.int64)
    pair_query, pair_item = np.asarray(pair_query, np.int64), np.asarray(pair_item, np.int64)
    out = np.full(len(pair_query), -np.inf)
    if len(pair_query) == 0:
        return out
    single = not vocab.use_behavior_token
    n_behaviors = n_behaviors_of(vocab)
    levels = resolve_behavior_levels(model, behavior_levels, n_behaviors)
    tables = _CatalogTables(codes, vocab.level_sizes, None, device)
    scorer = _ExactScorer(stepper, codes, tables, levels, renormalize, resolve_temperature(model, temperature),
                          chunk_rows)  # fmt: skip
    check_prompts_nonempty(model, prompts, "single" if single else "fixed_behavior")
    # pairs ordered by user, batches of whole users with at most chunk_rows pairs (at least one user)
    pair_user = query_user[pair_query]
    order = np.argsort(pair_user, kind="stable")
    per_user = np.bincount(pair_user, minlength=len(prompts))
    ends = np.cumsum(per_user)
    code_offsets = torch.tensor(vocab.level_offsets[:-1], device=device)
    slot = torch.arange(scorer.first_slot, scorer.first_slot + vocab.n_levels - 1, device=device)
    with eval_mode(model):
        start = 0
        while start < len(prompts):
            stop = max(start + 1, int(np.searchsorted(ends, ends[start - 1] + chunk_rows if start else chunk_rows,
                                                      side="right")))
            stop = min(stop, len(prompts))
            lo, hi = (ends[start - 1] if start else 0), ends[stop - 1]
            if hi > lo:
                rows = order[lo:hi]
                queries, local = np.unique(pair_query[rows], return_inverse=True)
                state, logits = stepper.prefill(prompts.rows(slice(start, stop)))
                q_user = torch.from_numpy(query_user[queries] - start).to(device)
                q_behavior = torch.from_numpy(query_behavior[queries]).to(device)
                if single:
                    q_behavior = torch.zeros_like(q_behavior)
                first_logits = _start_queries(stepper, state, logits, q_user, q_behavior, levels, single)
                local_t = torch.from_numpy(local).to(device)
                items = torch.from_numpy(pair_item[rows]).to(device)
                item_codes = scorer.codes[items]  # [P, L]
                zero = torch.zeros(len(rows), dtype=torch.long, device=device)
                total = scorer.log_probs(0, first_logits[local_t], zero, zero).gather(1, item_codes[:, :1])[:, 0]
                if vocab.n_levels > 1:
                    stepper.select(state, local_t)
                    tokens = code_offsets + item_codes[:, :-1]
                    behaviors = q_behavior[local_t][:, None].expand_as(tokens)
                    step_logits = stepper.step(state, tokens, slot.expand_as(tokens), behaviors, levels[behaviors])
                    for level in range(1, vocab.n_levels):
                        logp = scorer.log_probs(level, step_logits[:, level - 1], zero, items)
                        total = total + logp.gather(1, item_codes[:, level : level + 1])[:, 0]
                out[rows] = total.double().cpu().numpy()
            start = stop
    return out
