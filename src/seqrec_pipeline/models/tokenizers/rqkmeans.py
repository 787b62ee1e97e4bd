"""Residual k-means (RQ-KMeans) semantic IDs with faiss (docs/design.md#tokenizers).

Level 0 clusters the item embeddings; level l clusters what levels 0..l-1 left over
(the residuals).  An item's code is its cluster at every level.  The reference runs
``sklearn.KMeans(max_iter=1000)`` per level until it converges.  Here each level runs, in order:

1. faiss k-means (random or k-means++ init, ``sample_iters`` Lloyd iterations) on a seeded
   sample of ``k * sample_points_per_centroid`` residuals: the large early moves of the
   centroids cost a fraction of a full pass;
2. ``full_iters`` Lloyd iterations on all items, scoring distances in ``precision``:
   bfloat16 where the CPU multiplies it natively (AVX512-BF16 / AMX; faster than the fp32
   GEMM), fp32 otherwise;
3. the level's codes are the last iteration's partition, its centroids their means.

Then ``refine_iters`` sweeps of joint refinement in fp32 (each level re-fitted against what the
other levels leave; exact coordinate descent, so the error never increases) reach a lower
reconstruction error than the reference's in a fraction of its time
(benchmarks/bench_tokenize.py).  An optional collision-aware last level
(``balance_last_level``, on by default) spreads items that share a full code over free
last-level codes, in the spirit of the reference's Sinkhorn re-encoding (docs/design.md#collisions).

Determinism: faiss seeds its initialisation and sample from ``seed``; the result is bit-for-bit
identical for the same input, seed, thread count and precision.  Pass ``n_threads`` to pin the
thread count (restored afterwards) so tables do not depend on the machine's core count; the
precision ``"auto"`` picks is recorded in the result (a CPU without native bfloat16 gives other,
equally good, tables).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np
import scipy.sparse
import torch

from seqrec_pipeline.errors import InputError

_INIT_METHODS = {
    "random": faiss.ClusteringInitMethod_RANDOM,
    "kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
}
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class RQKMeansResult:
    """Output of :func:`rqkmeans`.

    Attributes:
        codes: int64 ``[n_items, n_levels]``, code of item i at each level.
        centroids: one float32 ``[level_size, dim]`` codebook per level.
        level_sizes: codebook size per level (after any capping to ``n_items``).
        level_mse: mean squared residual norm ``mean_i ||x_i - x̂_i||²`` after each level;
            the last entry is the reconstruction error of the whole table.
        precision: the precision of the full-data Lloyd iterations (``"bf16"`` or ``"fp32"``; ``"fp32"``
            when there were none).
    """

    codes: np.ndarray
    centroids: list[np.ndarray]
    level_sizes: tuple[int, ...]
    level_mse: list[float] = field(default_factory=list)
    precision: str = "fp32"

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
def pinned_threads(n_threads: int | None) -> Iterator[None]:
    """Temporarily set faiss' OpenMP and torch's thread counts (no-op for ``None``)."""
    if n_threads is None:
        yield
        return
    previous, previous_torch = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(int(n_threads))
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
        torch.set_num_threads(previous_torch)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), i.e. faster than fp32."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:
        return False
    try:
        caps = get()
    except Exception:  # capability probing is best effort; fp32 is always correct
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


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


def _assign(
    target: np.ndarray, centroids: np.ndarray, shift_codes: np.ndarray | None = None, chunk: int = 2048
) -> np.ndarray:
    """Exact nearest centroid (L2) of every row of ``target``: argmin_j ||c_j||² - 2 t·c_j.

    With ``shift_codes`` the rows are ``target + centroids[shift_codes]`` (a level's own target rebuilt chunk
    by chunk from the residual, never at full size).  One BLAS GEMM per chunk of rows into reused buffers
    (same answers as faiss' ``IndexFlatL2``, faster for a single neighbour because nothing but the
    argmin is kept).
    """
    n = len(target)
    centroids_t = np.ascontiguousarray(centroids.T)
    norms = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(n, dtype=np.int64)
    scores_buffer = np.empty((min(chunk, n), len(centroids)), dtype=np.float32)
    rows_buffer = np.empty((min(chunk, n), target.shape[1]), dtype=np.float32) if shift_codes is not None else None
    for start in range(0, n, chunk):
        rows = target[start : start + chunk]
        if rows_buffer is not None:
            shifted = rows_buffer[: len(rows)]
            np.take(centroids, shift_codes[start : start + chunk], axis=0, out=shifted, mode="clip")
            rows = np.add(shifted, rows, out=shifted)
        scores = scores_buffer[: len(rows)]
        np.matmul(rows, centroids_t, out=scores)
        scores *= -2.0
        scores += norms
        out[start : start + len(rows)] = scores.argmin(axis=1)
    return out


def _assign_bf16(rows: torch.Tensor, centroids: np.ndarray, shift: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Nearest centroid of every row, scored in bfloat16: argmax_j (t·c_j - ||c_j||²/2).

    ``rows`` are the targets minus ``shift`` in bfloat16; the centroids are shifted the same way, which leaves
    distances unchanged but keeps the scores small where the data has a large common offset (bfloat16 keeps
    8 bits of mantissa).  Near-ties may go to the second nearest centroid: only the full-data Lloyd iterations
    use this, and the exact fp32 refinement comes after them.
    """
    c = torch.from_numpy(np.ascontiguousarray(centroids - shift, dtype=np.float32))
    c_t = c.bfloat16().T.contiguous()
    half_norms = (c * c).sum(1) * 0.5
    n, k = len(rows), len(centroids)
    out = np.empty(n, dtype=np.int64)
    products = torch.empty((min(chunk, n), k), dtype=torch.bfloat16)
    scores = torch.empty((min(chunk, n), k), dtype=torch.float32)
    scores_np = scores.numpy()
    for start in range(0, n, chunk):
        block = rows[start : start + chunk]
        m = len(block)
        torch.mm(block, c_t, out=products[:m])
        scores[:m].copy_(products[:m]).sub_(half_norms)
        out[start : start + m] = scores_np[:m].argmax(axis=1)  # numpy's argmax is faster than torch's here
    return out


def _lloyd(
    target: np.ndarray, centroids: np.ndarray, iters: int, precision: str, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """``iters`` (>= 1) Lloyd iterations on every row of ``target``: nearest centroid, then each centroid to the
    mean of its rows.  Returns the centroids and the last assignment (whose means they are)."""
    if precision == "bf16":
        shift = target.mean(axis=0, dtype=np.float64).astype(np.float32)
        rows = torch.empty(target.shape, dtype=torch.bfloat16)
        for start in range(0, len(target), chunk):  # no full-size fp32 temporary
            rows[start : start + chunk] = torch.from_numpy(target[start : start + chunk] - shift)

        def nearest(c: np.ndarray) -> np.ndarray:
            return _assign_bf16(rows, c, shift, chunk)
    else:

        def nearest(c: np.ndarray) -> np.ndarray:
            return _assign(target, c, chunk=chunk)

    for _ in range(iters):
        assign = nearest(centroids)
        centroids = _update_centroids(target, assign, centroids)
    return centroids, assign


def _code_sums(x: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Sum of the rows of ``x`` per code ``[k, dim]``: a sparse one-hot product, deterministic (items in order).

    Built as the ``[n, k]`` one-hot (one entry per row: no sort) and applied transposed, so scipy walks ``x`` once
    in row order and adds into the small, cache-resident sums: faster than ``[k, n] @ x``, same bits.
    """
    n = len(codes)
    onehot = scipy.sparse.csr_matrix((np.ones(n, dtype=np.float32), codes, np.arange(n + 1)), shape=(n, k))
    return np.asarray(onehot.T @ x)


def _means(sums: np.ndarray, codes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per-code means from per-code ``sums``; codes without items keep their centroid."""
    counts = np.bincount(codes, minlength=len(centroids))
    used = counts > 0
    out = centroids.copy()
    out[used] = (sums[used] / counts[used, None]).astype(np.float32)
    return out


def _update_centroids(target: np.ndarray, assign: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Mean of ``target`` per code; codes without items keep their centroid."""
    return _means(_code_sums(target, assign, len(centroids)), assign, centroids)


def _refine_level(
    residual: np.ndarray, codes: np.ndarray, centroids: np.ndarray, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """One exact coordinate-descent step on one level; updates ``residual`` in place.

    The level's target is ``t = residual + centroids[codes]`` (x minus the other levels).  Re-assign every
    item to its nearest centroid of t, then set each centroid to the mean of its items' t.  Never
    increases the total error.  t is never materialised at full size: the assignment rebuilds it per
    chunk, and the means follow from ``sum_i t_i = sum_i residual_i + (new-code x old-code counts) @ old
    centroids``.

    Returns the new codes and centroids.
    """
    k = len(centroids)
    new = _assign(residual, centroids, shift_codes=codes, chunk=chunk)
    moved = np.bincount(new * k + codes, minlength=k * k).reshape(k, k).astype(np.float32)
    updated = _means(_code_sums(residual, new, k) + moved @ centroids, new, centroids)
    chosen = np.empty((min(chunk, len(residual)), residual.shape[1]), dtype=np.float32)
    for start in range(0, len(residual), chunk):  # residual += old centroid - new centroid
        rows = slice(start, start + chunk)
        c = chosen[: len(codes[rows])]
        residual[rows] += np.take(centroids, codes[rows], axis=0, out=c, mode="clip")
        residual[rows] -= np.take(updated, new[rows], axis=0, out=c, mode="clip")
    return new, updated


def _row_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group id of every row of a non-negative int table, and the size of each group.

    Rows become one int64 key each (mixed radix) when the code space fits, so grouping is a 1-d unique
    instead of a much slower row-wise ``np.unique(axis=0)``.
    """
    dims = codes.max(axis=0) + 1
    if np.sum(np.log2(dims.astype(np.float64))) < 62:
        keys = np.ravel_multi_index(codes.T, dims)
        _, group, counts = np.unique(keys, return_inverse=True, return_counts=True)
    else:
        _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return group.reshape(-1), counts


def _nearest_free(rows: np.ndarray, open_rows: np.ndarray, centroids: np.ndarray, taken: np.ndarray,
                  prefix: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows[open_rows]``: the nearest centroid its prefix has not taken, and the squared float64
    distance to it (inf: none free).  Chunk by chunk, so memory stays at one chunk's distances, not
    colliding items x codebook (which reaches gigabytes at millions of items)."""
    best = np.empty(len(open_rows), dtype=np.int64)
    best_d = np.empty(len(open_rows))
    squares = (centroids * centroids).sum(1)[None, :]
    for start in range(0, len(open_rows), chunk):
        at = open_rows[start : start + chunk]
        t = np.asarray(rows[at], dtype=np.float64)
        dist = (t * t).sum(1)[:, None] - 2.0 * (t @ centroids.T) + squares
        dist[taken[prefix[at]]] = np.inf
        best[start : start + chunk] = dist.argmin(axis=1)
        best_d[start : start + chunk] = dist[np.arange(len(at)), best[start : start + chunk]]
    return best, best_d


def spread_last_level(codes: np.ndarray, target: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Collision-aware last level: spread items that share a full code over free last-level codes.

    In the spirit of the reference's Sinkhorn re-encoding of colliding groups on the last
    level (docs/design.md#collisions), but as a deterministic greedy matching.  Only members of
    colliding groups move.  A last-level code is *free* for a prefix (the codes of levels
    0..L-2) when no non-colliding item of that prefix uses it.  In rounds, every
    unresolved colliding item proposes its nearest free code (squared L2 distance of its
    last-level ``target`` to ``centroids``); per (prefix, code) the closest proposer wins
    (ties: lower item index) and that code becomes taken.  A group member whose nearest
    free code is its own code keeps it, so usually the member closest to the shared
    centroid stays.  Items whose prefix has no free code left keep their code.

    Guarantees: collisions never increase (per prefix, the number of distinct codes is
    min(k, items) or grows), codes stay in ``[0, len(centroids))``, and the result is a
    pure function of the inputs.

    Args:
        codes: int ``[n_items, L]`` table; only column ``L-1`` changes.
        target: float ``[n_items, dim]``, what the last level quantizes (the residual
            after levels 0..L-2).
        centroids: ``[k, dim]`` last-level codebook.

    Returns:
        A new int64 code table.
    """
    codes = np.array(codes, dtype=np.int64, copy=True)
    n, n_levels = codes.shape
    if n == 0:
        return codes
    k = len(centroids)
    group, counts = _row_groups(codes)
    colliding = counts[group] > 1
    if not colliding.any():
        return codes
    if n_levels > 1:
        prefix, _ = _row_groups(codes[:, :-1])
    else:
        prefix = np.zeros(n, dtype=np.int64)
    items = np.flatnonzero(colliding)
    prefixes, pid = np.unique(prefix[items], return_inverse=True)
    # slots (prefix, code) already held by items that do not collide
    taken = np.zeros((len(prefixes), k), dtype=bool)
    others = np.flatnonzero(~colliding)
    pos = np.minimum(np.searchsorted(prefixes, prefix[others]), len(prefixes) - 1)
    holds = prefixes[pos] == prefix[others]
    taken[pos[holds], codes[others[holds], -1]] = True
    rows = target[items]
    c = np.asarray(centroids, dtype=np.float64)
    new = codes[items, -1].copy()
    open_ = np.ones(len(items), dtype=bool)
    while open_.any():
        u = np.flatnonzero(open_)
        best, best_d = _nearest_free(rows, u, c, taken, pid)
        stuck = ~np.isfinite(best_d)  # every code of the prefix is taken: keep the old code
        open_[u[stuck]] = False
        u, best, best_d = u[~stuck], best[~stuck], best_d[~stuck]
        if len(u) == 0:
            break
        order = np.lexsort((u, best_d, best, pid[u]))  # by prefix, code, distance, item
        p_o, b_o = pid[u][order], best[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (p_o[1:] != p_o[:-1]) | (b_o[1:] != b_o[:-1])
        win = u[order][first]
        new[win] = best[order][first]
        taken[pid[win], new[win]] = True
        open_[win] = False
    codes[items, -1] = new
    return codes


def rqkmeans(
    embeddings: np.ndarray,
    n_levels: int = 3,
    codebook_size: int | Sequence[int] = 256,
    *,
    seed: int = 0,
    sample_iters: int = 8,
    sample_points_per_centroid: int = 64,
    full_iters: int = 10,
    precision: str = "auto",
    init: str = "random",
    refine_iters: int = 2,
    balance_last_level: bool = True,
    n_threads: int | None = None,
    on_too_few_items: str = "cap",
) -> RQKMeansResult:
    """Residual k-means codes for ``embeddings [n_items, dim]`` (steps in the module docstring).

    Args:
        n_levels, codebook_size: number of levels and codebook size (one int for all
            levels, or one per level; any positive size, not only powers of two).
        seed: level l uses ``seed + l`` for faiss' initialisation and sample.
        sample_iters: faiss Lloyd iterations per level on the sample (>= 1).
        sample_points_per_centroid: the sample holds ``k * sample_points_per_centroid``
            residuals (every item when there are fewer).
        full_iters: Lloyd iterations per level on all items after the sample ones.
        precision: distance scoring of the full-data iterations: ``"bf16"``, ``"fp32"``,
            or ``"auto"`` (bf16 where the CPU multiplies it natively, else fp32).  The
            refinement is always fp32.
        init: ``"random"`` (faiss default: k random points) or ``"kmeans++"``.
        refine_iters: after the greedy level-by-level pass, sweeps of joint refinement
            on all items: for each level in turn, re-assign its codes and recompute its
            centroids (means) against ``x`` minus the other levels' reconstruction.
            Each step is exact coordinate descent on the total reconstruction error, so
            it never increases it; a sweep costs one exact assignment per level.
        balance_last_level: re-assign the last-level codes of items that share a full
            code to their nearest last-level centroid not yet used by their prefix
            (:func:`spread_last_level`), then recompute the last-level centroids as
            the means of their items.  Raises the unique-code ratio; never adds
            collisions.  :func:`~seqrec_pipeline.models.tokenizers.resolve_collisions`
            still guarantees the bijection afterwards.
        n_threads: pin faiss' and torch's thread count for this call (see module docstring).
        on_too_few_items: when a codebook is larger than the number of items,
            ``"cap"`` shrinks it to ``n_items`` with a warning (tiny test datasets keep
            working; ``level_sizes`` reports the sizes used), ``"error"`` raises.

    Returns:
        :class:`RQKMeansResult` with codes, codebooks, level sizes, per-level MSE and the precision used.
    """
    x = check_finite(embeddings)
    n, dim = x.shape
    sizes = _level_sizes(n_levels, codebook_size)
    if on_too_few_items not in ("cap", "error"):
        raise InputError(f"on_too_few_items must be 'cap' or 'error', got {on_too_few_items!r}")
    if init not in _INIT_METHODS:
        raise InputError(f"init must be one of {sorted(_INIT_METHODS)}, got {init!r}")
    sample_iters, sample_points_per_centroid = int(sample_iters), int(sample_points_per_centroid)
    full_iters, refine_iters = int(full_iters), int(refine_iters)
    for name, value, least in (("sample_iters", sample_iters, 1), ("sample_points_per_centroid",
                               sample_points_per_centroid, 1), ("full_iters", full_iters, 0),
                               ("refine_iters", refine_iters, 0)):
        if value < least:
            raise InputError(f"{name} must be >= {least}, got {value}")
    precision = resolve_precision(precision)  # validated even when unused
    if full_iters == 0:
        precision = "fp32"  # nothing runs in bf16 then
    if max(sizes) > n:
        msg = f"codebook size {max(sizes)} exceeds the number of items {n}"
        if on_too_few_items == "error":
            raise InputError(msg + "; use a smaller codebook_size")
        warnings.warn(msg + f"; capping codebooks at {n}", stacklevel=2)
        sizes = [min(s, n) for s in sizes]

    residual = x.copy()
    # The chosen centroid of every item at one level, preallocated: at 100k x 384 a fresh array per level
    # costs about as much as the arithmetic on it.  (np.take with ``out`` is only unbuffered, i.e. fast,
    # with mode="clip"; the indices are always in range here.)
    chosen = np.empty_like(x)
    codes = np.empty((n, n_levels), dtype=np.int64)
    centroids: list[np.ndarray] = []
    with pinned_threads(n_threads):
        for level, k in enumerate(sizes):
            km = faiss.Kmeans(
                dim,
                k,
                niter=sample_iters,
                seed=seed + level,
                verbose=False,
                min_points_per_centroid=1,  # small catalogs are fine; don't print warnings
                max_points_per_centroid=sample_points_per_centroid,
            )
            km.cp.init_method = _INIT_METHODS[init]
            km.train(residual)
            cb = np.ascontiguousarray(km.centroids, dtype=np.float32)
            if full_iters > 0:
                # the level's codes are the last iteration's partition and cb its means: the best centroids for
                # that partition; items nearer another centroid now move in the (exact) refinement
                cb, assign = _lloyd(residual, cb, full_iters, precision)
            else:
                assign = _assign(residual, cb)  # faiss may have fitted on a sample: code every item
            residual -= np.take(cb, assign, axis=0, out=chosen, mode="clip")
            codes[:, level] = assign
            centroids.append(cb)
        # residual == x - sum of all levels' centroids
        for _ in range(refine_iters):
            for level in range(n_levels):
                codes[:, level], centroids[level] = _refine_level(residual, codes[:, level], centroids[level])
    if balance_last_level:
        last = n_levels - 1
        target = residual + centroids[last][codes[:, last]]
        balanced = spread_last_level(codes, target, centroids[last])
        if not np.array_equal(balanced[:, last], codes[:, last]):
            centroids[last] = _update_centroids(target, balanced[:, last], centroids[last])
            codes = balanced
    # per-level MSE of the final table (residual after levels 0..l), chunk by chunk: no full-size copy of x
    sums = np.zeros(n_levels)
    for start in range(0, n, 4096):
        partial = x[start : start + 4096].copy()
        for level in range(n_levels):
            partial -= centroids[level][codes[start : start + 4096, level]]
            sums[level] += np.einsum("ij,ij->", partial, partial, dtype=np.float64)
    level_mse = (sums / n).tolist()
    return RQKMeansResult(codes=codes, centroids=centroids, level_sizes=tuple(sizes), level_mse=level_mse,
                          precision=precision)

