"""Embedding node: items -> vectors aligned with the dense item index."""

from __future__ import annotations

import polars as pl

from seqrec_pipeline.data.embeddings import embed_items
from seqrec_pipeline.params import EmbedParams, validate


def embed(items: pl.DataFrame, sequences: pl.LazyFrame, params: dict, seed: int):
    # a scan (catalog: sequences@lazy), so the runner does not hold the whole table while the matrix is factorized
    vectors, info = embed_items(items, sequences, validate(EmbedParams, params, prefix="embed."), seed)
    metrics = {f"embed/{k}": {"value": float(info[k]), "step": 0} for k in ("dim", "n_text", "n_cf")}
    return vectors, info, metrics
