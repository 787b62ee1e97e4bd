"""Generative rankers: trie-constrained beam search over each sample's history (``decoding``)."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from seqrec_pipeline.decoding import PrefixIndex, beam_search, build_prompts
from seqrec_pipeline.splits import EvalSet, eval_set
from seqrec_pipeline.vocab import TokenVocab

from .core import Ranking, selection_scores
from .metrics import behavior_accuracy


def prepare_model(model: torch.nn.Module, device: str | None) -> torch.nn.Module:
    """The model on ``device`` (default: CUDA when available) in eval mode."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def rank_generative(model, data: EvalSet, codes: np.ndarray, vocab: TokenVocab, behavior_levels: np.ndarray,
                    *, beam_size: int, top_k: int, batch_size: int = 16, renormalize: bool = False,
                    temperature: float | None = None, index: PrefixIndex | None = None) -> Ranking:
    """Constrained beam search for every sample: the top ``top_k`` items and their scores (summed
    log-probabilities of the item's codes).  ``index``: the trie of ``codes`` on the model's device, when the
    caller ranks many times (default: built here)."""
    if index is None:
        index = PrefixIndex.build(codes, vocab.level_sizes, device=next(model.parameters()).device)
    prompts = build_prompts(data.histories, codes, vocab, behavior_levels, sessions=data.history_sessions)
    single = not vocab.use_behavior_token
    result = beam_search(
        model, prompts, index, mode="single" if single else "fixed_behavior",
        behaviors=None if single else data.behavior_mask(len(vocab.behaviors)),
        behavior_levels=None if single else behavior_levels, beam_size=max(beam_size, top_k), top_k=top_k,
        batch_size=batch_size, renormalize=renormalize, temperature=temperature,
    )
    items = np.full((data.n_samples, top_k), -1, dtype=np.int64)
    scores = np.full((data.n_samples, top_k), -np.inf, dtype=np.float32)
    for b, ranked in result.by_behavior.items():
        rows = np.flatnonzero(data.sample_behavior == b) if not single else np.arange(data.n_samples)
        items[rows] = ranked.items.numpy()[data.sample_user[rows], :top_k]
        scores[rows] = ranked.scores.numpy()[data.sample_user[rows], :top_k]
    return Ranking(items, scores)


def next_behavior_accuracy(model, data: EvalSet, codes: np.ndarray, vocab: TokenVocab, behavior_levels: np.ndarray,
                           *, beam_size: int, batch_size: int = 16, temperature: float | None = None) -> float | None:
    """Behavior-item mode: the model generates the behavior token, then the item; share of users whose
    top-ranked (behavior, item) has a behavior present in their target window.  None for single-behavior data."""
    if not vocab.use_behavior_token:
        return None
    device = next(model.parameters()).device
    index = PrefixIndex.build(codes, vocab.level_sizes, device=device)
    prompts = build_prompts(data.histories, codes, vocab, behavior_levels, sessions=data.history_sessions)
    result = beam_search(model, prompts, index, mode="behavior_item", behavior_levels=behavior_levels,
                         beam_size=beam_size, top_k=1, batch_size=batch_size, temperature=temperature)
    return behavior_accuracy(result.predicted_behavior.numpy(), data.behavior_mask(len(vocab.behaviors)))


def validation_ndcg(sequences: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab, behavior_levels: np.ndarray,
                    target_behavior: int, protocol: str, max_history: int, beam_size: int, k: int = 10,
                    explore: bool = False, valid_users: int | None = None):
    """Early-stopping metric on the validation window: NDCG@k of the target behavior's lists, or with
    ``explore`` the model's explore quality: NDCG@k of every behavior's list without history items against
    the explore targets (the model's part in the repeat / explore mixture); over at most ``valid_users`` users."""
    data = eval_set(sequences, protocol, "valid", max_history, max_users=valid_users,
                    behaviors=[target_behavior] if vocab.use_behavior_token and not explore else None)

    def metric(model, epoch: int) -> float:
        if not data.n_samples:
            return 0.0
        ranking = rank_generative(model, data, codes, vocab, behavior_levels, beam_size=beam_size,
                                  top_k=beam_size if explore else k)
        return selection_scores(data, ranking, k, explore)[f"ndcg@{k}"]

    return metric


def validation_ndcg_for_job(context, *, target_behavior: int, protocol: str, max_history: int, beam_size: int,
                            explore: bool = False, valid_users: int | None = None):
    """The same metric inside a launched training job (``training.launch`` factory hook)."""
    levels = context.behaviors.sort("behavior_idx")["level"].to_numpy().astype(np.int64)
    return validation_ndcg(context.sequences, context.codes, context.vocab, levels, target_behavior, protocol,
                           max_history, beam_size, explore=explore, valid_users=valid_users)
