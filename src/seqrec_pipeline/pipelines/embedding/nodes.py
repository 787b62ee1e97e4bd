"""Embedding node: items -> vectors aligned with the dense item index."""

from __future__ import annotations

import polars as pl

from seqrec_pipeline.data.embeddings import embed_items


def embed(items: pl.DataFrame, sequences: pl.DataFrame, params: dict, seed: int):
    vectors, info = embed_items(items, sequences, params, seed)
    metrics = {f"embed/{k}": {"value": float(info[k]), "step": 0} for k in ("dim", "n_text", "n_cf")}
    return vectors, info, metrics
