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
from seqrec_pipeline.params import CIDParams, GivenParams, RIDParams, RQKMeansParams

METHODS = ("rqkmeans", "rqvae", "cid", "rid", "given")
# the parameter model of each method (`tokenizers.<method>`); rqvae's dict is validated by RQVAEConfig
PARAMS = {"rqkmeans": RQKMeansParams, "cid": CIDParams, "rid": RIDParams, "given": GivenParams}
# `tokenizers.rqkmeans` parameters: levels and codebook_size are rqkmeans()'s positional arguments, the rest
# its keywords of the same name (the seed comes from the global `seed`)
RQKMEANS_KEYWORDS = ("sample_iters", "sample_points_per_centroid", "full_iters", "precision", "init",
                     "refine_iters", "balance_last_level", "n_threads")


@dataclass
class SIDResult:
    codes: np.ndarray  # int64 [n_items, L(+1)], a bijection
    level_sizes: tuple[int, ...]
    stats: dict
    model: Any  # what re-encodes items: RQ-KMeans centroids, the RQ-VAE, or the method's settings


def build_sid(method: str, embeddings: np.ndarray | None, item_ids: Sequence[str],
              params: RQKMeansParams | CIDParams | RIDParams | GivenParams | dict, seed: int,
              index_file: Path | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> SIDResult:
    """Run ``method`` with its ``params`` (the ``tokenizers.<method>`` parameters, as ``PARAMS[method]``; a dict of
    RQVAEConfig fields for ``rqvae``)."""
    if method not in METHODS:
        raise InputError(f"unknown tokenizer '{method}'; choose one of {list(METHODS)}")
    if not isinstance(params, PARAMS.get(method, dict)):
        raise TypeError(f"build_sid('{method}') takes {PARAMS.get(method, dict).__name__}, not {type(params).__name__}")
    n_items = len(item_ids)
    model: Any
    extra: dict = {}
    if method == "rqkmeans":
        keywords = {key: getattr(params, key) for key in RQKMEANS_KEYWORDS if getattr(params, key) is not None}
        result = rqkmeans(check_finite(embeddings), params.levels, params.codebook_size, seed=seed, **keywords)
        codes, sizes = result.codes, result.level_sizes
        model = {"method": method, "centroids": result.centroids, "level_mse": result.level_mse,
                 "precision": result.precision}
        extra = {"precision": result.precision, "level_mse": result.level_mse}
    elif method == "rqvae":
        trained = train_rqvae(check_finite(embeddings), dict(params), seed=seed, on_epoch=on_epoch)
        codes, sizes = trained.model.encode(embeddings), tuple(trained.model.config.codebook_sizes)
        model = trained.model
    elif method == "cid":
        base = params.base
        codes = cid(n_items, base, shuffle=params.shuffle, seed=seed)
        sizes, model = (base,) * codes.shape[1], {"method": method, "base": base}
    elif method == "rid":
        sizes = tuple(params.level_sizes)
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
