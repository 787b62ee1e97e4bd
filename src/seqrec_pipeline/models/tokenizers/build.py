"""One entry point for every semantic-ID method: items -> bijective ``codes[n_items, L]`` + stats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers.collisions import check_bijection, infer_level_sizes, resolve_collisions
from seqrec_pipeline.models.tokenizers.rqkmeans import check_finite, rqkmeans
from seqrec_pipeline.models.tokenizers.rqvae import train_rqvae
from seqrec_pipeline.models.tokenizers.simple import cid, parse_index, rid

METHODS = ("rqkmeans", "rqvae", "cid", "rid", "given")
# `tokenizers.rqkmeans` parameters: levels and codebook_size are rqkmeans()'s positional arguments, the rest
# its keywords of the same name (the seed comes from the global `seed`)
RQKMEANS_KEYWORDS = ("sample_iters", "sample_points_per_centroid", "full_iters", "precision", "init",
                     "refine_iters", "balance_last_level", "n_threads")
RQKMEANS_PARAMS = ("levels", "codebook_size", *RQKMEANS_KEYWORDS)


@dataclass
class SIDResult:
    codes: np.ndarray  # int64 [n_items, L(+1)], a bijection
    level_sizes: tuple[int, ...]
    stats: dict
    model: Any  # what re-encodes items: RQ-KMeans centroids, the RQ-VAE, or the method's settings


def build_sid(method: str, embeddings: np.ndarray | None, item_ids: Sequence[str], params: dict, seed: int,
              index_file: Path | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> SIDResult:
    """Run ``method`` with its ``params`` (the ``tokenizers.<method>`` parameters)."""
    if method not in METHODS:
        raise InputError(f"unknown tokenizer '{method}'; choose one of {list(METHODS)}")
    n_items = len(item_ids)
    model: Any
    extra: dict = {}
    if method == "rqkmeans":
        unknown = sorted(set(params) - set(RQKMEANS_PARAMS))
        if unknown:
            raise InputError(f"unknown tokenizers.rqkmeans parameter(s) {unknown}; valid: {list(RQKMEANS_PARAMS)}")
        keywords = {"n_threads": 1} | {key: params[key] for key in RQKMEANS_KEYWORDS if key in params}
        result = rqkmeans(check_finite(embeddings), int(params.get("levels", 3)), params.get("codebook_size", 256),
                          seed=seed, **keywords)
        codes, sizes = result.codes, result.level_sizes
        model = {"method": method, "centroids": result.centroids, "level_mse": result.level_mse,
                 "precision": result.precision}
        extra = {"precision": result.precision, "level_mse": result.level_mse}
    elif method == "rqvae":
        trained = train_rqvae(check_finite(embeddings), dict(params), seed=seed, on_epoch=on_epoch)
        codes, sizes = trained.model.encode(embeddings), tuple(trained.model.config.codebook_sizes)
        model = trained.model
    elif method == "cid":
        base = int(params.get("base", 64))
        codes = cid(n_items, base, shuffle=bool(params.get("shuffle", False)), seed=seed)
        sizes, model = (base,) * codes.shape[1], {"method": method, "base": base}
    elif method == "rid":
        sizes = tuple(int(s) for s in params.get("level_sizes", (256, 256, 256)))
        codes, model = rid(n_items, sizes, seed=seed), {"method": method, "level_sizes": sizes}
    else:
        if index_file is None or not Path(index_file).exists():
            raise InputError(
                f"tokenizer 'given' needs the reference index file, not found: {index_file}. Put <D>.index.json in "
                "the dataset's raw folder or set tokenizers.given.file."
            )
        codes = parse_index(index_file, item_ids)
        sizes, model = infer_level_sizes(codes), {"method": method, "file": str(index_file)}
    table, stats = resolve_collisions(codes, sizes)
    check_bijection(table, stats["level_sizes"])
    return SIDResult(table, tuple(stats["level_sizes"]), stats | {"method": method} | extra, model)
