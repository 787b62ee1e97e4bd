"""Residual k-means (RQ-KMeans) semantic IDs with faiss (SPEC §3.5, gamer-notes §3.3).

Level 0 clusters the item embeddings; level l clusters what levels 0..l-1 left over
(the residuals).  An item's code is its cluster at every level.  The reference runs
``sklearn.KMeans(max_iter=1000)`` per level; faiss' k-means does the same Lloyd
iterations with BLAS and subsamples large inputs (``max_points_per_centroid``), which
is an order of magnitude faster at equal quality (see benchmarks/bench_tokenize.py).

Determinism: faiss seeds its initialisation and subsampling from ``seed``; the result
is bit-for-bit identical for the same input, seed and thread count.  Pass
``n_threads`` to pin the thread count (restored afterwards) so tables do not depend on
the machine's core count.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from seqrec_pipeline.errors import InputError

_INIT_METHODS = {
    "random": faiss.ClusteringInitMethod_RANDOM,
    "kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
}


@dataclass
class RQKMeansResult:
    """Output of :func:`rqkmeans`.

    Attributes:
        codes: int64 ``[n_items, n_levels]``, code of item i at each level.
        centroids: one float32 ``[level_size, dim]`` codebook per level.
        level_sizes: codebook size per level (after any capping to ``n_items``).
        level_mse: mean squared residual norm ``mean_i ||x_i - x̂_i||²`` after each level;
            the last entry is the reconstruction error of the whole table.
    """

    codes: np.ndarray
    centroids: list[np.ndarray]
    level_sizes: tuple[int, ...]
    level_mse: list[float] = field(default_factory=list)

    @property
    def reconstruction_mse(self) -> float:
        return self.level_mse[-1]

    def reconstruct(self, codes: np.ndarray | None = None) -> np.ndarray:
        """Sum of the chosen centroids per level (the quantized embedding)."""
        codes = self.codes if codes is None else np.asarray(codes)
        out = np.zeros((len(codes), self.centroids[0].shape[1]), dtype=np.float32)
        for level, cb in enumerate(self.centroids):
            out += cb[codes[:, level]]
        return out


def check_finite(embeddings: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 2-d array; reject NaN/inf rows.

    The error names the offending rows because a single bad row usually points to an
    empty or broken item text upstream.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-d array [n_items, dim], got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise InputError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(
            f"{name} contain NaN or inf in {len(rows)} row(s) (item index): {rows[:20].tolist()}"
            + (" ..." if len(rows) > 20 else "")
            + "; fix or drop those items before tokenizing"
        )
    return x


@contextlib.contextmanager
def faiss_threads(n_threads: int | None) -> Iterator[None]:
    """Temporarily set faiss' OpenMP thread count (no-op for ``None``)."""
    if n_threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _level_sizes(n_levels: int, codebook_size: int | Sequence[int]) -> list[int]:
    if isinstance(codebook_size, (int, np.integer)):
        sizes = [int(codebook_size)] * n_levels
    else:
        sizes = [int(s) for s in codebook_size]
        if len(sizes) != n_levels:
            raise InputError(f"codebook_size lists {len(sizes)} sizes for {n_levels} levels")
    if n_levels < 1 or min(sizes) < 1:
        raise InputError(f"need n_levels >= 1 and codebook sizes >= 1, got {n_levels} x {sizes}")
    return sizes


def rqkmeans(
    embeddings: np.ndarray,
    n_levels: int = 3,
    codebook_size: int | Sequence[int] = 256,
    *,
    seed: int = 0,
    niter: int = 20,
    init: str = "random",
    max_points_per_centroid: int | None = 256,
    n_threads: int | None = None,
    on_too_few_items: str = "cap",
) -> RQKMeansResult:
    """Residual k-means codes for ``embeddings [n_items, dim]``.

    Args:
        n_levels, codebook_size: number of levels and codebook size (one int for all
            levels, or one per level; any positive size, not only powers of two).
        seed: level l uses ``seed + l`` for faiss' initialisation and subsampling.
        niter: Lloyd iterations per level.
        init: ``"random"`` (faiss default: k random points) or ``"kmeans++"``.
        max_points_per_centroid: faiss trains each level on at most
            ``k * max_points_per_centroid`` sampled residuals (all items are then
            assigned); ``None`` trains on every item.
        n_threads: pin faiss' thread count for this call (see module docstring).
        on_too_few_items: when a codebook is larger than the number of items,
            ``"cap"`` shrinks it to ``n_items`` with a warning (tiny test datasets keep
            working; ``level_sizes`` reports the sizes used), ``"error"`` raises.

    Returns:
        :class:`RQKMeansResult` with codes, codebooks, level sizes and per-level MSE.
    """
    x = check_finite(embeddings)
    n, dim = x.shape
    sizes = _level_sizes(n_levels, codebook_size)
    if on_too_few_items not in ("cap", "error"):
        raise InputError(f"on_too_few_items must be 'cap' or 'error', got {on_too_few_items!r}")
    if init not in _INIT_METHODS:
        raise InputError(f"init must be one of {sorted(_INIT_METHODS)}, got {init!r}")
    if max(sizes) > n:
        msg = f"codebook size {max(sizes)} exceeds the number of items {n}"
        if on_too_few_items == "error":
            raise InputError(msg + "; use a smaller codebook_size")
        warnings.warn(msg + f"; capping codebooks at {n}", stacklevel=2)
        sizes = [min(s, n) for s in sizes]

    residual = x.copy()
    codes = np.empty((n, n_levels), dtype=np.int64)
    centroids, level_mse = [], []
    with faiss_threads(n_threads):
        for level, k in enumerate(sizes):
            km = faiss.Kmeans(
                dim,
                k,
                niter=niter,
                seed=seed + level,
                verbose=False,
                min_points_per_centroid=1,  # small catalogs are fine; don't print warnings
                max_points_per_centroid=max_points_per_centroid or max(n // k + 1, 1),
            )
            km.cp.init_method = _INIT_METHODS[init]
            km.train(residual)
            # Assign every item (training may have used a subsample); IndexFlatL2 is exact.
            _, assign = km.index.search(residual, 1)
            assign = assign[:, 0].astype(np.int64)
            cb = np.ascontiguousarray(km.centroids, dtype=np.float32)
            residual -= cb[assign]
            codes[:, level] = assign
            centroids.append(cb)
            level_mse.append(float(np.einsum("ij,ij->i", residual, residual, dtype=np.float64).mean()))
    return RQKMeansResult(codes=codes, centroids=centroids, level_sizes=tuple(sizes), level_mse=level_mse)
