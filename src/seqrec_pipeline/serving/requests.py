"""Answers to request rows: a history of raw item ids, behaviors and timestamps -> ranked raw item ids per
requested behavior (docs/serving.md has the schema).

A request row (a dict, or a row of a pandas DataFrame):

- ``items``: list of raw item ids (strings; numbers are read as their decimal text), oldest first or any order;
- ``behaviors``: list of behavior names, one per item;
- ``timestamps``: list of integer times in the log's unit (seconds for timestamped logs), one per item;
- ``request_behaviors`` (optional): behavior names to rank for; absent or empty: every behavior;
- ``k`` (optional): list length, 1..beam size; default ``min(10, beam size)``.

Events are sorted by time and cut into sessions with the dataset's session gap, as ``preprocess`` does; items
the model does not know are skipped and counted.  A history without a known item gets the most popular items
of each requested behavior in the training data (``fallback: true``).  Everything after validation is
vectorized over the rows of a call: one beam search for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from seqrec_pipeline.data.preprocess import sessionize
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.splits import latest_set

from .recommender import Recommender

FIELDS = ("items", "behaviors", "timestamps", "request_behaviors", "k")
DEFAULT_K = 10


class RequestError(InputError):
    """A malformed request; the message names the row and the field."""


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_list(value: Any, row: int, field: str) -> list:
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    raise RequestError(f"row {row}: '{field}' must be a list, got {type(value).__name__}")


@dataclasses.dataclass
class Request:
    items: list[str]
    behaviors: list[int]
    timestamps: list[int]
    request_behaviors: list[int]
    k: int


def parse_request(values: dict, row: int, recommender: Recommender) -> Request:
    """One request row, checked field by field (every problem names ``row`` and the field)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise RequestError(f"row {row}: unknown field(s) {unknown}; a request has {list(FIELDS)}")
    lists = {}
    for field in ("items", "behaviors", "timestamps"):
        if _absent(values.get(field)):
            raise RequestError(f"row {row}: '{field}' is missing (a list, may be empty)")
        lists[field] = _as_list(values[field], row, field)
    lengths = {f: len(v) for f, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise RequestError(f"row {row}: 'items', 'behaviors' and 'timestamps' must have the same length, got "
                           f"{lengths}")
    names = recommender.behaviors.names
    bad = [b for b in lists["behaviors"] if b not in names]
    if bad:
        raise RequestError(f"row {row}: 'behaviors' has unknown behavior(s) {sorted(set(map(str, bad)))}; "
                           f"choose among {list(names)}")
    try:
        times = [int(t) for t in lists["timestamps"]]
    except (TypeError, ValueError):
        raise RequestError(f"row {row}: 'timestamps' must be integers") from None
    wanted = values.get("request_behaviors")
    if _absent(wanted) or (isinstance(wanted, (list, tuple, np.ndarray)) and len(wanted) == 0):
        requested = list(range(len(names)))
    else:
        wanted = _as_list(wanted, row, "request_behaviors")
        bad = [b for b in wanted if b not in names]
        if bad:
            raise RequestError(f"row {row}: 'request_behaviors' has unknown behavior(s) {bad}; choose "
                               f"among {list(names)}")
        requested = [names.index(b) for b in dict.fromkeys(wanted)]
    beam = recommender.settings.beam_size
    k = values.get("k")
    if _absent(k):
        k = min(DEFAULT_K, beam)
    elif isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= beam:
        raise RequestError(f"row {row}: 'k' must be an integer in 1..{beam} (the items the model ranks per query), "
                           f"got {k!r}")
    return Request([str(i) for i in lists["items"]], [names.index(b) for b in lists["behaviors"]], times,
                   requested, int(k))


def rows_of(requests: Any) -> list[dict]:
    """Request rows from a pandas DataFrame, a list of dicts or one dict."""
    if hasattr(requests, "to_dict") and hasattr(requests, "columns"):
        return requests.to_dict(orient="records")
    if isinstance(requests, dict):
        return [requests]
    if isinstance(requests, Iterable):
        return [dict(r) for r in requests]
    raise RequestError(f"requests must be a table of rows with fields {list(FIELDS)}")


def answer(recommender: Recommender, requests: Any, use_repeat: bool = True) -> list[dict]:
    """Per request row: ``{"recommendations": [{"behavior", "items", "scores"}, ...], "unknown_items": n,
    "fallback": bool}`` (one entry per requested behavior, in request order)."""
    parsed = [parse_request(values, row, recommender) for row, values in enumerate(rows_of(requests))]
    n = len(parsed)
    lengths = np.array([len(r.items) for r in parsed], dtype=np.int64)
    events = pl.DataFrame({
        "user_idx": np.repeat(np.arange(n, dtype=np.int64), lengths),
        "item_id": [i for r in parsed for i in r.items],
        "behavior": np.array([b for r in parsed for b in r.behaviors], dtype=np.int8),
        "timestamp": np.array([t for r in parsed for t in r.timestamps], dtype=np.int64),
    }, schema={"user_idx": pl.Int64, "item_id": pl.Utf8, "behavior": pl.Int8, "timestamp": pl.Int64})
    ids = pl.DataFrame({"item_id": recommender.item_ids, "item": np.arange(len(recommender.item_ids), dtype=np.int32)})
    events = events.join(ids, on="item_id", how="left", maintain_order="left")
    unknown = np.bincount(events.filter(pl.col("item").is_null())["user_idx"].to_numpy(), minlength=n)
    known = sessionize(events.drop_nulls("item").sort("user_idx", "timestamp", maintain_order=True),
                       recommender.settings.session_gap_seconds)
    histories = known.group_by("user_idx", maintain_order=True).agg("item", "behavior", "timestamp", "session")
    rows = histories["user_idx"].to_numpy()
    data = latest_set(histories, recommender.settings.max_history, range(len(recommender.behaviors)))
    # every row ranks only the behaviors it asked for
    wanted = np.zeros((n, len(recommender.behaviors)), dtype=bool)
    for r, request in enumerate(parsed):
        wanted[r, request.request_behaviors] = True
    keep = wanted[rows[data.sample_user], data.sample_behavior]
    data = dataclasses.replace(data, sample_user=data.sample_user[keep], sample_behavior=data.sample_behavior[keep],
                               targets=[[]] * int(keep.sum()), repeat=[[]] * int(keep.sum()))
    ranked: dict[tuple[int, int], tuple[list[str], list[float]]] = {}
    if data.n_samples:
        ranking = recommender.rank(data, max(r.k for r in parsed), use_repeat)
        items, scores = recommender.ranked_lists(ranking)
        for row, behavior, i, s in zip(rows[data.sample_user], data.sample_behavior, items.to_list(), scores.to_list(),
                                       strict=True):
            ranked[int(row), int(behavior)] = (i, s)
    names = recommender.behaviors.names
    out = []
    for r, request in enumerate(parsed):
        fallback = (r, request.request_behaviors[0]) not in ranked
        lists = []
        for b in request.request_behaviors:
            if fallback:
                top = recommender.popular.get(names[b], {"items": [], "scores": []})
                i, s = top["items"], top["scores"]
            else:
                i, s = ranked[r, b]
            lists.append({"behavior": names[b], "items": i[:request.k], "scores": s[:request.k]})
        out.append({"recommendations": lists, "unknown_items": int(unknown[r]), "fallback": fallback})
    return out
