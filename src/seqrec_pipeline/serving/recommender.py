"""A trained recommender with everything it needs to answer for raw ids: the model (a generative decoder with its
SID table and vocabulary, or a discriminative baseline), the behavior table, the item id map, the repeat / explore
head and the popularity fallback.

The same object serves the batch pipelines (``batch.py``) and the MLflow model (``pyfunc.py``); both rank with
the evaluation's functions (``ranking.rank_generative`` or ``ranking.rank_discriminative``, then
``ranking.repeat.mixture_ranking``) on an :class:`~seqrec_pipeline.splits.EvalSet` built by ``splits.latest_set``,
so the three paths cannot drift apart.

On disk (``save`` / ``load``) it is a folder of plain files: ``model/`` (``config.json`` + ``model.safetensors``),
``sid_table.parquet`` and ``sid_vocab.json`` (a decoder only), ``items.parquet`` (item_idx, item_id),
``behaviors.parquet``,
``repeat_head.json`` (absent when the run fitted none), ``successors.parquet`` (every item's successors, counted
on the whole log, when the head pools them), ``cooccurrence.parquet`` (every item's co-occurring items, likewise),
``popular.json``, ``serving.json`` (decoding settings).
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
from seqrec_pipeline.ranking.repeat import Mixture, RepeatInputs, mixture_ranking
from seqrec_pipeline.ranking.successors import Neighbors, Successors, cooccurrence_table, successor_table
from seqrec_pipeline.splits import BehaviorTable, EvalSet, events_before, training_prefix
from seqrec_pipeline.vocab import TokenVocab

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


class Recommender:
    """Top-k raw item ids per (history, behavior) from a trained model, optionally through its repeat head.
    ``sid_table`` / ``sid_vocab``: a decoder's; None for a discriminative model (``SequentialRecommender``)."""

    def __init__(self, model: torch.nn.Module, sid_table: pl.DataFrame | None, sid_vocab: dict | None,
                 items: pl.DataFrame, behaviors: pl.DataFrame, repeat_head: dict | None, popular: dict,
                 settings: ServingSettings, successors: Successors | None = None, neighbors: Neighbors | None = None):
        self.model = prepare_model(model, settings.device)
        self.generative = not isinstance(model, SequentialRecommender)
        if self.generative and (sid_table is None or sid_vocab is None):
            raise ValueError("a generative model needs its SID table and token vocabulary")
        self.sid_table, self.sid_vocab, self.items, self.behaviors_table = sid_table, sid_vocab, items, behaviors
        if self.generative:
            self.codes = sid_table.sort("item_idx").drop("item_idx").to_numpy()
            self.vocab = TokenVocab.from_dict(sid_vocab)
            # the catalog's trie, built once: every request and batch chunk decodes against it
            self.index = PrefixIndex.build(self.codes, self.vocab.level_sizes,
                                           device=next(self.model.parameters()).device)
        self.behaviors = BehaviorTable.from_table(behaviors)
        self.item_ids = items.sort("item_idx")["item_id"].to_numpy().astype(str)
        self.repeat_head = repeat_head
        self.mixture = Mixture.from_dict(repeat_head) if repeat_head else None
        again = "package the model again (kedro run --pipeline={0} --nodes={0}.package_model)".format(
            "smb_decoder" if self.generative else "smb_rec")
        if self.mixture is not None and self.mixture.uses_successors and successors is None:
            raise InputError("this model's repeat head pools the recent items' successors, but successors.parquet is "
                             f"missing: {again}")
        if self.mixture is not None and self.mixture.uses_cooccurrence and neighbors is None:
            raise InputError(f"this model's repeat head pools the co-occurring items, but cooccurrence.parquet is "
                             f"missing: {again}")
        self.successors, self.neighbors = successors, neighbors
        self.popular, self.settings = popular, settings

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
        s = self.settings
        if self.generative:
            base = rank_generative(self.model, data, self.codes, self.vocab, self.behaviors.levels,
                                   beam_size=s.beam_size, top_k=s.beam_size, batch_size=s.batch_size,
                                   renormalize=s.renormalize, temperature=s.temperature, index=self.index)
        else:
            base = rank_discriminative(self.model, data, s.beam_size, s.batch_size, s.max_history)
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
        if self.generative:
            self.model.save_pretrained(paths["model"])  # safetensors + config.json
            self.sid_table.write_parquet(paths["sid_table"])
            Path(paths["sid_vocab"]).write_text(json.dumps(self.sid_vocab))
        else:
            Path(paths["model"]).mkdir()
            write_rec_model(self.model, paths["model"])
            for name in ("sid_table", "sid_vocab"):  # a stale SID table would make `load` read a decoder
                Path(paths.pop(name)).unlink(missing_ok=True)
        self.items.select("item_idx", "item_id").write_parquet(paths["items"])
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
        return cls(load_model(paths["model"]) if generative else read_rec_model(paths["model"]),
                   pl.read_parquet(paths["sid_table"]) if generative else None,
                   json.loads(Path(paths["sid_vocab"]).read_text()) if generative else None,
                   pl.read_parquet(paths["items"]),
                   pl.read_parquet(paths["behaviors"]),
                   json.loads(Path(head).read_text()) if head and Path(head).is_file() else None,
                   json.loads(Path(paths["popular"]).read_text()), ServingSettings(**settings, device=device),
                   Successors.from_frame(pl.read_parquet(successors))
                   if successors and Path(successors).is_file() else None,
                   Neighbors.from_frame(pl.read_parquet(neighbors))
                   if neighbors and Path(neighbors).is_file() else None)


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
    return Recommender(model, sid_table, sid_vocab, items, behaviors, repeat_head,
                       popular_items(sequences, behaviors, items, protocol, beam_size), settings, successors, neighbors)
