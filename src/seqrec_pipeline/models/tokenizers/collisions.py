"""Collision resolution and quality statistics for semantic-ID tables (docs/design.md#collisions).

Every tokenizer produces ``codes[n_items, L]``.  Two items may share the same full
code ("collide"); a generative model could then not tell them apart.  The reference
spreads the last level with Sinkhorn and keeps whatever collisions remain
(github.com/wzf2000/GAMER); here colliding items get one extra *disambiguation* level instead,
numbered 0, 1, 2, ... inside each group in item-index order, so the table is always a
bijection between items and code sequences.

The level is added only when it is needed: a collision-free table is returned
unchanged (``stats["added_level"]`` says which case happened), so the token block
stays as short as possible.  Items that do not collide get disambiguation code 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqrec_pipeline.errors import InputError


def _as_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InputError(f"codes must be a 2-d integer array [n_items, n_levels], got shape {codes.shape}")
    if codes.dtype.kind not in "iu":
        raise InputError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.size and codes.min() < 0:
        rows = np.flatnonzero((codes < 0).any(axis=1))
        raise InputError(f"codes must be non-negative; negative codes in rows {rows[:10].tolist()}")
    return codes.astype(np.int64, copy=False)


def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group id per item (groups = identical rows) and the size of each group."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def infer_level_sizes(codes: np.ndarray) -> tuple[int, ...]:
    """Smallest codebook sizes that hold the table: ``max code + 1`` per level."""
    codes = _as_codes(codes)
    if len(codes) == 0:
        return tuple(1 for _ in range(codes.shape[1]))
    return tuple(int(m) + 1 for m in codes.max(axis=0))


def level_stats(codes: np.ndarray, level_sizes: Sequence[int] | None = None) -> dict:
    """Per-level codebook usage (fraction of codes used) and normalized entropy.

    Entropy is that of the empirical code distribution divided by ``log(level_size)``,
    so 1.0 means perfectly balanced usage of the whole codebook.  A level of size 1
    carries no information and is reported as entropy 1.0 by convention.
    """
    codes = _as_codes(codes)
    sizes = tuple(int(s) for s in (level_sizes if level_sizes is not None else infer_level_sizes(codes)))
    if len(sizes) != codes.shape[1]:
        raise InputError(f"level_sizes has {len(sizes)} entries but codes have {codes.shape[1]} levels")
    usage, entropy = [], []
    for level, size in enumerate(sizes):
        col = codes[:, level]
        if col.size and col.max() >= size:
            raise InputError(f"level {level}: code {int(col.max())} outside codebook of size {size}")
        counts = np.bincount(col, minlength=size)
        usage.append(float(np.count_nonzero(counts) / size))
        p = counts[counts > 0] / max(len(col), 1)
        h = float(-(p * np.log(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0
        entropy.append(h / float(np.log(size)) if size > 1 else 1.0)
    return {"level_sizes": list(sizes), "usage": usage, "entropy": entropy}


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full code is not unique-by-first-occurrence: ``1 - n_unique / n``.

    This is the LETTER/GAMER definition used to select RQ-VAE checkpoints.
    """
    codes = _as_codes(codes)
    if len(codes) == 0:
        return 0.0
    return 1.0 - len(np.unique(codes, axis=0)) / len(codes)


def resolve_collisions(
    codes: np.ndarray, level_sizes: Sequence[int] | None = None
) -> tuple[np.ndarray, dict]:
    """Make the table a bijection by appending a disambiguation level where needed.

    Args:
        codes: int array ``[n_items, L]``; row i is item i's code.
        level_sizes: codebook size per level (for usage/entropy); inferred as
            ``max + 1`` per level when omitted.

    Returns:
        ``(table, stats)``.  ``table`` is ``codes`` (as int64) when every row is
        unique, otherwise ``[n_items, L + 1]`` with the extra column numbering the
        members of each colliding group 0, 1, 2, ... in item-index order (stable).
        ``stats`` holds: ``n_items``, ``n_levels_in``, ``unique_ratio`` (before
        resolution), ``collision_rate``, ``n_colliding_items`` (items in a group of
        size > 1), ``n_collision_groups``, ``max_group_size``, ``added_level``,
        ``n_disambiguation_codes`` (size of the extra level, 0 if not added),
        ``level_sizes`` (of the returned table), and per-level ``usage`` and
        ``entropy`` of the returned table.
    """
    codes = _as_codes(codes)
    n, n_levels = codes.shape
    sizes = list(level_sizes) if level_sizes is not None else list(infer_level_sizes(codes))
    if len(sizes) != n_levels:
        raise InputError(f"level_sizes has {len(sizes)} entries but codes have {n_levels} levels")

    group, counts = _groups(codes) if n else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    n_unique = len(counts)
    max_group = int(counts.max()) if n else 0
    colliding = counts > 1

    if max_group > 1:
        # Rank of each item inside its group: a stable sort by group id keeps item order
        # within a group, so the rank is the position minus the group's first position.
        order = np.argsort(group, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - starts[group[order]]
        table = np.concatenate([codes, rank[:, None]], axis=1)
        sizes = sizes + [max_group]
    else:
        table = codes

    stats = {
        "n_items": int(n),
        "n_levels_in": int(n_levels),
        "unique_ratio": float(n_unique / n) if n else 1.0,
        "collision_rate": float(1.0 - n_unique / n) if n else 0.0,
        "n_colliding_items": int(counts[colliding].sum()),
        "n_collision_groups": int(colliding.sum()),
        "max_group_size": max_group,
        "added_level": bool(max_group > 1),
        "n_disambiguation_codes": max_group if max_group > 1 else 0,
    }
    stats.update(level_stats(table, sizes))
    return table, stats


def is_bijection(codes: np.ndarray) -> bool:
    """True when every item has a distinct code row (items -> codes is invertible)."""
    codes = _as_codes(codes)
    return len(np.unique(codes, axis=0)) == len(codes)


def check_bijection(codes: np.ndarray, level_sizes: Sequence[int] | None = None) -> None:
    """Raise ``InputError`` naming the offending items unless the table is a bijection.

    Also checks that every code lies inside its level's codebook when ``level_sizes``
    is given, since the vocabulary only has tokens for those codes.
    """
    codes = _as_codes(codes)
    if level_sizes is not None:
        sizes = np.asarray(level_sizes, dtype=np.int64)
        if len(sizes) != codes.shape[1]:
            raise InputError(f"level_sizes has {len(sizes)} entries but codes have {codes.shape[1]} levels")
        bad = np.flatnonzero((codes >= sizes).any(axis=1))
        if len(bad):
            raise InputError(f"codes outside the codebook sizes {sizes.tolist()} in rows {bad[:10].tolist()}")
    group, counts = _groups(codes)
    if (counts > 1).any():
        dup = np.flatnonzero(counts[group] > 1)
        raise InputError(
            f"SID table is not a bijection: {len(dup)} items share a code with another item "
            f"(first: {dup[:10].tolist()}); run resolve_collisions first"
        )
