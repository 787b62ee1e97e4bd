"""A stored recommender with everything it needs to answer for raw ids: the ranker (a generative decoder with its
SID table and vocabulary, a discriminative baseline, or the ``item_knn`` rule's co-occurrence table), the behavior
table, the item id map, the repeat / explore head and the popularity fallback.

The same object serves the batch pipelines (``batch.py``) and the MLflow model (``pyfunc.py``); both rank with
the evaluation's functions (``ranking.rank_generative``, ``ranking.rank_discriminative`` or
``ranking.rules.ItemKnn.rank``, then ``ranking.repeat.mixture_ranking``) on an
:class:`~seqrec_pipeline.splits.EvalSet` built by ``splits.latest_set``, so the paths cannot drift apart.

On disk (``save`` / ``load``) it is a folder of plain files: ``model/`` (a decoder's or a baseline's
``config.json`` + ``model.safetensors``; the rule's ``config.json`` + ``ppmi.parquet``),
``sid_table.parquet`` and ``sid_vocab.json`` (a decoder only), ``items.parquet`` (item_idx, item_id; item_prior,
each item's log share of the log's events, when the head's learned ranker reads it),
``behaviors.parquet``,
``repeat_head.json`` (absent when the run fitted none), ``successors.parquet`` (every item's successors, counted
on the whole log, when the head pools them), ``cooccurrence.parquet`` (every item's co-occurring items, likewise),
``popular.json``, ``serving.json`` (ranking settings).
Nothing in it is pickled or can execute code when loaded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from seqrec_pipeline.decoding import PrefixIndex
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.rec_model import read_rec_model, write_rec_model
from seqrec_pipeline.models.discriminative import SequentialRecommender
from seqrec_pipeline.ranking import Ranking, rank_discriminative, rank_generative
from seqrec_pipeline.ranking.generative import prepare_model
from seqrec_pipeline.ranking.rules import ItemKnn
from seqrec_pipeline.ranking.repeat import Mixture, RepeatInputs, mixture_ranking
from seqrec_pipeline.ranking.successors import Neighbors, Successors, cooccurrence_table, successor_table
from seqrec_pipeline.splits import BehaviorTable, EvalSet, events_before, training_prefix
from seqrec_pipeline.vocab import TokenVocab, item_codes

PACKAGED_BY = {"decoder": "smb_decoder", "discriminative": "smb_rec", "item_knn": "smb_rule"}
FILES = {"model": "model", "sid_table": "sid_table.parquet", "sid_vocab": "sid_vocab.json", "items": "items.parquet",
         "behaviors": "behaviors.parquet", "repeat_head": "repeat_head.json",
         "successors": "successors.parquet", "cooccurrence": "cooccurrence.parquet", "popular": "popular.json",
         "settings": "serving.json"}


@dataclass(frozen=True)
class ServingSettings:
    """How the stored model ranks (the evaluation's settings of the run that trained it).  ``beam_size``: the items
    the model ranks per query before the repeat head, and so the largest k (a decoder's beam; a discriminative
    model's candidates, ``repeat.candidates``); ``renormalize`` and ``temperature`` apply to a decoder only."""

    max_history: int
    beam_size: int
    batch_size: int
    renormalize: bool
    temperature: float | None
    session_gap_seconds: float
    device: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "device"}


def popular_items(sequences: pl.DataFrame, behaviors: pl.DataFrame, items: pl.DataFrame, protocol: str,
                  n: int) -> dict[str, dict[str, list]]:
    """Per behavior, the ``n`` items with the most training events of that behavior and their share of those
    events: the answer for a history with no known item."""
    train = training_prefix(sequences, protocol, users="all")
    table = BehaviorTable.from_table(behaviors)
    ids = items.sort("item_idx")["item_id"].to_numpy()
    counts = np.zeros((len(table), items.height))
    np.add.at(counts, (train.behavior.astype(np.int64), train.item.astype(np.int64)), 1.0)
    top = np.argsort(-counts, axis=1, kind="stable")[:, :n]
    total = np.maximum(counts.sum(1, keepdims=True), 1.0)
    out = {}
    for b, name in enumerate(table.names):
        keep = counts[b, top[b]] > 0
        out[name] = {"items": [str(i) for i in ids[top[b][keep]]],
                     "scores": [float(s) for s in (counts[b, top[b]] / total[b])[keep]]}
    return out


class DecoderRanker:
    """A generative decoder's constrained beam search over its catalog's SID trie (built once: every request and
    batch chunk decodes against it)."""

    kind = "decoder"

    def __init__(self, model: torch.nn.Module, sid_table: pl.DataFrame, sid_vocab: dict, levels,
                 settings: ServingSettings):
        self.model = prepare_model(model, settings.device)
        self.sid_table, self.sid_vocab, self.levels, self.settings = sid_table, sid_vocab, levels, settings
        self.codes = item_codes(sid_table)
        self.vocab = TokenVocab.from_dict(sid_vocab)
        self.index = PrefixIndex.build(self.codes, self.vocab.level_sizes, device=next(self.model.parameters()).device)

    def rank(self, data: EvalSet) -> Ranking:
        s = self.settings
        return rank_generative(self.model, data, self.codes, self.vocab, self.levels, beam_size=s.beam_size,
                               top_k=s.beam_size, batch_size=s.batch_size, renormalize=s.renormalize,
                               temperature=s.temperature, index=self.index)

    def save(self, paths: dict[str, str]) -> None:
        self.model.save_pretrained(paths["model"])  # safetensors + config.json
        self.sid_table.write_parquet(paths["sid_table"])
        Path(paths["sid_vocab"]).write_text(json.dumps(self.sid_vocab))


class BaselineRanker:
    """A discriminative baseline's top candidates of the whole catalog."""

    kind = "discriminative"

    def __init__(self, model: torch.nn.Module, settings: ServingSettings):
        self.model, self.settings = prepare_model(model, settings.device), settings

    def rank(self, data: EvalSet) -> Ranking:
        s = self.settings
        return rank_discriminative(self.model, data, s.beam_size, s.batch_size, s.max_history)

    def save(self, paths: dict[str, str]) -> None:
        write_rec_model(self.model, paths["model"])


class RuleRanker:
    """The ``item_knn`` rule's co-occurring items of the user's newest items (no trained weights)."""

    kind = "item_knn"

    def __init__(self, knn: ItemKnn, settings: ServingSettings):
        self.model, self.settings = knn, settings

    def rank(self, data: EvalSet) -> Ranking:
        return self.model.rank(data, block=self.settings.batch_size)

    def save(self, paths: dict[str, str]) -> None:
        self.model.save(paths["model"])


def base_ranker(model, sid_table: pl.DataFrame | None, sid_vocab: dict | None, levels,
                settings: ServingSettings) -> DecoderRanker | BaselineRanker | RuleRanker:
    """The ranker of ``model``: a decoder (with its ``sid_table`` / ``sid_vocab``), a discriminative baseline
    (``SequentialRecommender``) or the ``item_knn`` rule (:class:`~seqrec_pipeline.ranking.rules.ItemKnn`)."""
    if isinstance(model, ItemKnn):
        return RuleRanker(model, settings)
    if isinstance(model, SequentialRecommender):
        return BaselineRanker(model, settings)
    if sid_table is None or sid_vocab is None:
        raise ValueError("a generative model needs its SID table and token vocabulary")
    return DecoderRanker(model, sid_table, sid_vocab, levels, settings)


class Recommender:
    """Top-k raw item ids per (history, behavior) from a stored ranker (:func:`base_ranker`: a decoder, a
    discriminative baseline or the ``item_knn`` rule), optionally through its repeat head.  ``sid_table`` /
    ``sid_vocab``: a decoder's; None otherwise."""

    def __init__(self, model, sid_table: pl.DataFrame | None, sid_vocab: dict | None,
                 items: pl.DataFrame, behaviors: pl.DataFrame, repeat_head: dict | None, popular: dict,
                 settings: ServingSettings, successors: Successors | None = None, neighbors: Neighbors | None = None,
                 item_prior: np.ndarray | None = None):
        self.behaviors = BehaviorTable.from_table(behaviors)
        self.ranker = base_ranker(model, sid_table, sid_vocab, self.behaviors.levels, settings)
        self.model = self.ranker.model
        self.items, self.behaviors_table = items, behaviors
        self.item_ids = items.sort("item_idx")["item_id"].to_numpy().astype(str)
        self.repeat_head = repeat_head
        self.mixture = Mixture.from_dict(repeat_head) if repeat_head else None
        again = "package the model again (kedro run --pipeline={0} --nodes={0}.package_model)".format(
            PACKAGED_BY[self.ranker.kind])
        if item_prior is not None and self.mixture is not None and self.mixture.reads_item_prior:
            self.mixture.ranker.item_prior = np.asarray(item_prior, np.float64)
        if self.mixture is not None and self.mixture.needs_item_prior:
            raise InputError("this model's repeat head ranks history items by their popularity, but items.parquet has "
                             f"no item_prior column: {again}")
        if self.mixture is not None and self.mixture.uses_successors and successors is None:
            raise InputError("this model's repeat head pools the recent items' successors, but successors.parquet is "
                             f"missing: {again}")
        if self.mixture is not None and self.mixture.uses_cooccurrence and neighbors is None:
            raise InputError(f"this model's repeat head pools the co-occurring items, but cooccurrence.parquet is "
                             f"missing: {again}")
        self.successors, self.neighbors = successors, neighbors
        self.popular, self.settings = popular, settings

    @property
    def kind(self) -> str:
        """``decoder``, ``discriminative`` or ``item_knn``."""
        return self.ranker.kind

    # ------------------------------------------------------------------ ranking
    def check_k(self, k: int) -> int:
        if not 1 <= int(k) <= self.settings.beam_size:
            raise InputError(f"k must lie in 1..{self.settings.beam_size} (the items the model ranks per query: "
                             f"eval.beam_size, or repeat.candidates for a baseline), got {k}")
        return int(k)

    def behavior_indices(self, names: list[str] | str | None) -> list[int]:
        """Behavior names -> indices; ``None`` or ``"all"``: every behavior."""
        if names is None or names == "all":
            return list(range(len(self.behaviors)))
        unknown = [n for n in names if n not in self.behaviors.names]
        if unknown or not names:
            raise InputError(f"unknown behavior(s) {unknown or names}; choose among {list(self.behaviors.names)}")
        return [self.behaviors.names.index(n) for n in dict.fromkeys(names)]

    def rank(self, data: EvalSet, k: int, use_repeat: bool = True) -> Ranking:
        """The evaluation's ranking of ``data``'s samples: the model's ``beam_size`` items (a decoder's whole beam
        of the constrained beam search; a discriminative model's top candidates of the catalog), then their top
        ``k`` or, with the repeat head, the repeat / explore mixture's top ``k`` over them."""
        k = self.check_k(k)
        base = self.ranker.rank(data)
        if self.mixture is None or not use_repeat:
            return Ranking(base.items[:, :k], base.scores[:, :k])
        return mixture_ranking(data, RepeatInputs(data, len(self.behaviors)), base, self.mixture, k,
                               successors=self.successors, neighbors=self.neighbors)

    def ranked_lists(self, ranking: Ranking) -> tuple[pl.Series, pl.Series]:
        """A ranking as list columns of raw item ids and float scores (empty slots dropped)."""
        valid = ranking.items >= 0
        offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int64))
        ids = pa.LargeListArray.from_arrays(offsets, pa.array(self.item_ids[ranking.items[valid]]))
        scores = pa.LargeListArray.from_arrays(offsets, pa.array(ranking.scores[valid].astype(np.float64)))
        return (pl.Series("items", ids).cast(pl.List(pl.Utf8)), pl.Series("scores", scores).cast(pl.List(pl.Float64)))

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> dict[str, str]:
        """Write the folder described in the module docstring; returns {artifact name: path}."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {name: str(directory / file) for name, file in FILES.items()}
        shutil.rmtree(paths["model"], ignore_errors=True)
        Path(paths["model"]).mkdir()
        if self.kind != "decoder":
            for name in ("sid_table", "sid_vocab"):  # a stale SID table would make `load` read a decoder
                Path(paths.pop(name)).unlink(missing_ok=True)
        self.ranker.save(paths)
        items = self.items.select("item_idx", "item_id").sort("item_idx")
        if self.mixture is not None and self.mixture.reads_item_prior:
            items = items.with_columns(item_prior=pl.Series(self.mixture.ranker.item_prior, dtype=pl.Float64))
        items.write_parquet(paths["items"])
        self.behaviors_table.write_parquet(paths["behaviors"])
        Path(paths["popular"]).write_text(json.dumps(self.popular))
        Path(paths["settings"]).write_text(json.dumps(self.settings.to_dict(), indent=2))
        if self.repeat_head:
            Path(paths["repeat_head"]).write_text(json.dumps(self.repeat_head, indent=2))
        else:
            del paths["repeat_head"]
        if self.successors is not None:
            self.successors.to_frame().write_parquet(paths["successors"])
        else:
            del paths["successors"]
        if self.neighbors is not None:
            self.neighbors.to_frame().write_parquet(paths["cooccurrence"])
        else:
            del paths["cooccurrence"]
        return paths

    @classmethod
    def load(cls, paths: dict[str, str] | str | Path, device: str | None = None) -> Recommender:
        """From a folder written by :meth:`save`, or {artifact name: path} (MLflow's ``context.artifacts``)."""
        from seqrec_pipeline.models.generative import load_model

        if not isinstance(paths, dict):
            paths = {name: str(Path(paths) / file) for name, file in FILES.items()}
        head, successors, neighbors = paths.get("repeat_head"), paths.get("successors"), paths.get("cooccurrence")
        settings = json.loads(Path(paths["settings"]).read_text())
        generative = bool(paths.get("sid_table")) and Path(paths["sid_table"]).is_file()
        if generative:
            model = load_model(paths["model"])
        else:
            model = ItemKnn.load(paths["model"]) if ItemKnn.is_stored_in(paths["model"]) else read_rec_model(
                paths["model"])
        items = pl.read_parquet(paths["items"]).sort("item_idx")
        return cls(model,
                   pl.read_parquet(paths["sid_table"]) if generative else None,
                   json.loads(Path(paths["sid_vocab"]).read_text()) if generative else None,
                   items.select("item_idx", "item_id"),
                   pl.read_parquet(paths["behaviors"]),
                   json.loads(Path(head).read_text()) if head and Path(head).is_file() else None,
                   json.loads(Path(paths["popular"]).read_text()), ServingSettings(**settings, device=device),
                   Successors.from_frame(pl.read_parquet(successors))
                   if successors and Path(successors).is_file() else None,
                   Neighbors.from_frame(pl.read_parquet(neighbors))
                   if neighbors and Path(neighbors).is_file() else None,
                   items["item_prior"].to_numpy() if "item_prior" in items.columns else None)


def build_recommender(model, sequences: pl.DataFrame, items: pl.DataFrame, behaviors: pl.DataFrame,
                      sid_table: pl.DataFrame | None, sid_vocab: dict | None, repeat_head: dict | None, *,
                      protocol: str, max_history: int, beam_size: int, batch_size: int, renormalize: bool,
                      temperature: float | None, session_gap_seconds: float, chunk_events: int,
                      device: str | None = None) -> Recommender:
    """A :class:`Recommender` from a run's artifacts (``model``: a decoder with its ``sid_table`` / ``sid_vocab``,
    or a discriminative model with None for both), ranking with the evaluation's settings; the popularity
    fallback is counted on ``protocol``'s training data, the successors and co-occurrence tables (when the head
    pools them; ``chunk_events``: the co-occurrence counts' chunking) on every event of ``sequences``, the logs
    the recommendations read."""
    settings = ServingSettings(max_history, beam_size, batch_size, renormalize, temperature, session_gap_seconds,
                               device)
    mixture = Mixture.from_dict(repeat_head) if repeat_head else None
    events = events_before(sequences, protocol, None) if mixture is not None else None
    successors = successor_table(events, mixture.successors.width) if mixture and mixture.uses_successors else None
    neighbors = (cooccurrence_table(events, mixture.cooccurrence.width, window=mixture.cooccurrence.window,
                                    chunk_events=chunk_events) if mixture and mixture.uses_cooccurrence else None)
    # the learned repeat ranker's item prior, like the tables: on every event of the log
    prior = (mixture.count_item_prior(events.item).ranker.item_prior
             if mixture is not None and mixture.reads_item_prior else None)
    return Recommender(model, sid_table, sid_vocab, items, behaviors, repeat_head,
                       popular_items(sequences, behaviors, items, protocol, beam_size), settings, successors, neighbors,
                       prior)
