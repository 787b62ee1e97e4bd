"""Evaluation on the stored splits (SPEC §6): targets, generative and rule rankers, the metrics report.

One *sample* is a (user, behavior) pair: the distinct items of that behavior in the user's target
window (the last session for ``last_session``, the last event for ``last_event``), with the
history = everything before the window (the reference's semantics).  Every ranker returns
``[n_samples, K]`` item indices (-1 = nothing), so generative models, rules and discriminative
models are scored by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import scipy.sparse
import torch

from seqrec_pipeline.decoding import PrefixIndex, beam_search, build_prompts
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.metrics import behavior_accuracy, metrics_by_behavior
from seqrec_pipeline.vocab import TokenVocab

SPLITS = ("valid", "test")


@dataclass
class EvalSet:
    """Users with a target window, their histories, and one sample per (user, behavior present)."""

    user_idx: np.ndarray  # [n_users]
    histories: list[np.ndarray]  # per user: [h, 2] (item_idx, behavior_idx), oldest first
    sample_user: np.ndarray  # [n_samples] row into user_idx
    sample_behavior: np.ndarray  # [n_samples]
    targets: list[list[int]]  # [n_samples] distinct target items

    @property
    def n_users(self) -> int:
        return len(self.user_idx)

    def behavior_mask(self, n_behaviors: int) -> np.ndarray:
        mask = np.zeros((self.n_users, n_behaviors), dtype=bool)
        mask[self.sample_user, self.sample_behavior] = True
        return mask


def eval_set(sequences: pl.DataFrame, protocol: str, split: str, max_history: int,
             behaviors: list[int] | None = None) -> EvalSet:
    """Targets and histories of ``split`` ('valid' or 'test') under ``protocol``."""
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; choose one of {list(SPLITS)}")
    valid_col, test_col = f"{protocol}_valid", f"{protocol}_test"
    if valid_col not in sequences.columns:
        raise InputError(f"unknown split.protocol '{protocol}'; choose last_event or last_session")
    users = sequences.filter(pl.col(test_col) >= 0)
    start = users[valid_col] if split == "valid" else users[test_col]
    end = users[test_col] if split == "valid" else users["n_events"]
    users = users.with_columns(start.alias("_start"), end.alias("_end"))
    window = (
        users.select("_start", "_end", "item", "behavior", pl.int_range(pl.len()).alias("row"))
        .explode("item", "behavior")
        .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
    )
    in_target = (pl.col("pos") >= pl.col("_start")) & (pl.col("pos") < pl.col("_end"))
    target = window.filter(in_target)
    if behaviors is not None:
        target = target.filter(pl.col("behavior").is_in(behaviors))
    samples = (target.group_by("row", "behavior", maintain_order=True).agg(pl.col("item").unique(maintain_order=True))
               .sort("row", "behavior"))
    history = window.filter((pl.col("pos") < pl.col("_start")) & (pl.col("pos") >= pl.col("_start") - max_history))
    per_user = history.group_by("row", maintain_order=True).agg("item", "behavior")
    hist = {r: np.stack([np.asarray(i, np.int64), np.asarray(b, np.int64)], 1)
            for r, i, b in per_user.iter_rows()}
    empty = np.zeros((0, 2), np.int64)
    return EvalSet(
        user_idx=users["user_idx"].to_numpy(),
        histories=[hist.get(r, empty) for r in range(users.height)],
        sample_user=samples["row"].to_numpy().astype(np.int64),
        sample_behavior=samples["behavior"].to_numpy().astype(np.int64),
        targets=samples["item"].to_list(),
    )


# ----------------------------------------------------------------------------- generative ranker
def rank_generative(model, data: EvalSet, codes: np.ndarray, vocab: TokenVocab, behavior_levels: np.ndarray,
                    *, beam_size: int, top_k: int, batch_size: int = 16, renormalize: bool = False,
                    temperature: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Constrained beam search for every sample: items and scores [n_samples, top_k]."""
    device = next(model.parameters()).device
    index = PrefixIndex.build(codes, vocab.level_sizes, device=device)
    prompts = build_prompts(data.histories, codes, vocab, behavior_levels)
    single = not vocab.use_behavior_token
    result = beam_search(
        model, prompts, index, mode="single" if single else "fixed_behavior",
        behaviors=None if single else data.behavior_mask(len(vocab.behaviors)),
        behavior_levels=None if single else behavior_levels, beam_size=max(beam_size, top_k), top_k=top_k,
        batch_size=batch_size, renormalize=renormalize, temperature=temperature,
    )
    items = np.full((len(data.sample_user), top_k), -1, dtype=np.int64)
    scores = np.full((len(data.sample_user), top_k), -np.inf, dtype=np.float32)
    for b, ranked in result.by_behavior.items():
        rows = np.flatnonzero(data.sample_behavior == b) if not single else np.arange(len(data.sample_user))
        items[rows] = ranked.items.numpy()[data.sample_user[rows], :top_k]
        scores[rows] = ranked.scores.numpy()[data.sample_user[rows], :top_k]
    return items, scores


def next_behavior_accuracy(model, data: EvalSet, codes: np.ndarray, vocab: TokenVocab, behavior_levels: np.ndarray,
                           *, beam_size: int, batch_size: int = 16, temperature: float | None = None) -> float | None:
    """Behavior-item mode: the model generates the behavior token, then the item; share of users whose
    top-ranked (behavior, item) has a behavior present in their target window.  None for single-behavior data."""
    if not vocab.use_behavior_token:
        return None
    device = next(model.parameters()).device
    index = PrefixIndex.build(codes, vocab.level_sizes, device=device)
    prompts = build_prompts(data.histories, codes, vocab, behavior_levels)
    result = beam_search(model, prompts, index, mode="behavior_item", behavior_levels=behavior_levels,
                         beam_size=beam_size, top_k=1, batch_size=batch_size, temperature=temperature)
    return behavior_accuracy(result.predicted_behavior.numpy(), data.behavior_mask(len(vocab.behaviors)))


def validation_ndcg(sequences: pl.DataFrame, codes: np.ndarray, vocab: TokenVocab, behavior_levels: np.ndarray,
                    target_behavior: int, protocol: str, max_history: int, beam_size: int, k: int = 10):
    """Early-stopping metric: NDCG@k of the target behavior on the validation window."""
    data = eval_set(sequences, protocol, "valid", max_history,
                    behaviors=[target_behavior] if vocab.use_behavior_token else None)

    def metric(model, epoch: int) -> float:
        if not len(data.targets):
            return 0.0
        items, _ = rank_generative(model, data, codes, vocab, behavior_levels, beam_size=beam_size, top_k=k)
        return metrics_by_behavior(items, data.targets, data.sample_behavior, ks=(k,))["merged"][f"ndcg@{k}"]

    return metric


def validation_ndcg_for_job(context, *, target_behavior: int, protocol: str, max_history: int, beam_size: int):
    """The same metric inside a launched training job (``training.launch`` factory hook)."""
    levels = context.behaviors.sort("behavior_idx")["level"].to_numpy().astype(np.int64)
    return validation_ndcg(context.sequences, context.codes, context.vocab, levels, target_behavior, protocol,
                           max_history, beam_size)


# ----------------------------------------------------------------------------- rule rankers
RULES = ("recent", "popularity", "transitions")


def _train_events(sequences: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """Training events (before each user's validation point) as (row, pos, item, behavior)."""
    cut = pl.when(pl.col(f"{protocol}_valid") >= 0).then(pl.col(f"{protocol}_valid")).otherwise(pl.col("n_events"))
    return (
        sequences.with_columns(cut.alias("_cut"))
        .select("_cut", "item", "behavior", pl.int_range(pl.len()).alias("row"))
        .explode("item", "behavior")
        .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
        .filter(pl.col("pos") < pl.col("_cut"))
    )


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, 1).argsort(axis=1, kind="stable")[:, ::-1]
    top = np.take_along_axis(part, order, 1)
    return np.where(np.take_along_axis(scores, top, 1) > 0, top, -1)


def rank_rule(rule: str, sequences: pl.DataFrame, data: EvalSet, n_items: int, protocol: str,
              top_k: int) -> np.ndarray:
    """Rule baselines on the same samples: recent-history repeat, popularity, item transitions."""
    if rule not in RULES:
        raise InputError(f"unknown rule model '{rule}'; choose one of {list(RULES)}")
    n = len(data.sample_user)
    train = _train_events(sequences, protocol)
    items_b = train.group_by("behavior", "item").len()
    popularity = np.zeros((int(sequences["behavior"].explode().max()) + 1, n_items), np.float64)
    popularity[items_b["behavior"].to_numpy(), items_b["item"].to_numpy()] = items_b["len"].to_numpy()
    overall = popularity.sum(0)
    if rule == "popularity":  # most popular items of the sample's behavior (ties: overall popularity)
        scores = popularity[data.sample_behavior] + overall[None, :] * 1e-9
        return _top(scores, top_k)
    out = np.full((n, top_k), -1, dtype=np.int64)
    if rule == "recent":  # the reference rule: the most recent distinct history items, newest first
        for u in range(data.n_users):
            seen = list(dict.fromkeys(data.histories[u][::-1, 0].tolist()))[:top_k]
            rows = np.flatnonzero(data.sample_user == u)
            out[rows, : len(seen)] = seen
        return out
    # transitions: next-item counts from consecutive training events, from the last history item
    nxt = train.sort("row", "pos").with_columns(pl.col("item").shift(-1).over("row").alias("next")).drop_nulls("next")
    pairs = nxt.group_by("item", "next").len()
    last = np.array([h[-1, 0] if len(h) else -1 for h in data.histories])
    src = last[data.sample_user]
    counts = scipy.sparse.csr_matrix(
        (pairs["len"].to_numpy().astype(np.float64), (pairs["item"].to_numpy(), pairs["next"].to_numpy())),
        shape=(n_items, n_items),
    )
    scores = overall[None, :].repeat(n, 0) * 1e-9
    has_last = src >= 0
    scores[has_last] += counts[src[has_last]].toarray()
    return _top(scores, top_k)


# ----------------------------------------------------------------------------- report
def metrics_report(*, dataset: str, pipeline: str, model: str, tokenizer: str | None, protocol: str,
                   n_users: int, n_items: int, data: EvalSet, items: np.ndarray, behavior_names: list[str],
                   ks: list[int], behavior_accuracy: float | None = None) -> dict:
    """The stable metrics.json of SPEC §6."""
    m = metrics_by_behavior(items, data.targets, data.sample_behavior, ks=ks, behavior_names=behavior_names)
    return {
        "dataset": dataset, "pipeline": pipeline, "model": model, "tokenizer": tokenizer, "protocol": protocol,
        "n_users": int(n_users), "n_items": int(n_items), "n_test": int(len(data.targets)),
        "metrics": {"merged": m["merged"], "by_behavior": m["by_behavior"]},
        "behavior_accuracy": behavior_accuracy,
    }


def mlflow_metrics(report: dict) -> dict:
    """``test/<merged|behavior>/<metric>_at_<k>`` (MLflow names cannot contain '@')."""
    out = {}
    groups = {"merged": report["metrics"]["merged"], **report["metrics"]["by_behavior"]}
    for group, values in groups.items():
        for name, value in values.items():
            out[f"test/{group}/{name.replace('@', '_at_')}"] = {"value": float(value), "step": 0}
    if report.get("behavior_accuracy") is not None:
        out["test/behavior_accuracy"] = {"value": float(report["behavior_accuracy"]), "step": 0}
    return out


def predictions_table(data: EvalSet, items: np.ndarray, scores: np.ndarray | None = None) -> pl.DataFrame:
    table = pl.DataFrame({
        "user_idx": data.user_idx[data.sample_user].astype(np.int32),
        "behavior_idx": data.sample_behavior.astype(np.int8),
        "items": items.astype(np.int32).tolist(),
        "targets": [list(map(int, t)) for t in data.targets],
    })
    if scores is not None:
        table = table.with_columns(pl.Series("scores", np.nan_to_num(scores, neginf=-1e30).tolist()))
    return table


def metrics_figure(report: dict, data: EvalSet, behavior_names: list[str]) -> plt.Figure:
    """Grouped bars: each metric@k per behavior and merged (n = samples)."""
    counts = {behavior_names[b]: int(n) for b, n in zip(*np.unique(data.sample_behavior, return_counts=True))}
    counts["merged"] = len(data.targets)
    groups = {**report["metrics"]["by_behavior"], "merged": report["metrics"]["merged"]}
    names = [n for n in next(iter(groups.values())) if not n.startswith("mrr")]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(names) * len(groups) / 2), 4.5), constrained_layout=True)
    width = 0.8 / len(groups)
    x = np.arange(len(names))
    for i, (group, values) in enumerate(groups.items()):
        n = counts.get(group, 0)
        ax.bar(x + i * width, [values[m] for m in names], width, label=f"{group} (n={n})",
               color="#333333" if group == "merged" else None)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, names)
    ax.set_ylabel("score")
    tok = f" · {report['tokenizer']}" if report.get("tokenizer") else ""
    ax.set_title(f"{report['dataset']} · {report['model']}{tok} · {report['protocol']} ({report['n_test']} samples)")
    ax.legend(frameon=False, ncols=min(len(groups), 4))
    return fig


def to_device(model: torch.nn.Module, device: str | None) -> torch.nn.Module:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()
