"""Semantic IDs that need no embeddings: ``cid``, ``rid`` and ``given`` (docs/design.md#tokenizers).

- :func:`cid` — chunked IDs: the base-K digits of the item index, as the reference.
- :func:`rid` — random unique codes in a mixed-radix space, sampled without building
  the space (the reference called ``np.random.choice(256**4, n, replace=False)``, which
  allocates 32 GiB).
- :func:`parse_index` — a ready ``<D>.index.json`` of the reference layout,
  ``{item_id: ["<a_183>", "<b_70>", ...]}``, aligned to our dense item order.

All return int64 ``codes[n_items, L]``; row i is the code of dense item i.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from seqrec_pipeline.errors import InputError


def cid_n_digits(n_items: int, base: int) -> int:
    """Fewest digits n >= 1 with ``base**n >= n_items``."""
    n = 1
    while base**n < n_items:
        n += 1
    return n


def cid(n_items: int, base: int = 64, *, shuffle: bool = False, seed: int = 0) -> np.ndarray:
    """Chunked IDs: digit j of item i is ``(idx_i // base**j) % base``.

    Least-significant digit first, as the reference, so level 0 is the fastest-varying
    digit.  ``idx_i = i`` or, with ``shuffle``, a seeded random permutation of the
    items (so neighbouring indices do not share prefixes).  Every level has ``base``
    codes; codes are unique by construction.
    """
    if n_items < 1:
        raise InputError(f"cid needs at least one item, got n_items={n_items}")
    if base < 2:
        raise InputError(f"cid base must be >= 2, got {base}")
    idx = np.arange(n_items, dtype=np.int64)
    if shuffle:
        idx = np.random.default_rng(seed).permutation(idx)
    n_digits = cid_n_digits(n_items, base)
    powers = base ** np.arange(n_digits, dtype=np.int64)
    return (idx[:, None] // powers[None, :]) % base


# Generator.choice works on int64 and avoids materialising the population when the
# sample is small relative to it (hash-set Floyd sampling); keep well below 2**63.
_CHOICE_MAX_SPACE = 2**62


def rid(n_items: int, level_sizes: Sequence[int] = (256, 256, 256), *, seed: int = 0) -> np.ndarray:
    """Random unique codes, uniform over the mixed-radix space ``prod(level_sizes)``.

    Spaces below 2**62 are sampled with ``Generator.choice(space, n, replace=False)``,
    which uses a hash set of size ~n (or a permutation of the space when n is above
    2 % of it, at most 50·n integers).  Larger spaces draw every digit independently
    and redraw the (astronomically rare) duplicate rows until all are unique.
    Level 0 is the most significant digit.
    """
    sizes = [int(s) for s in level_sizes]
    if not sizes or min(sizes) < 1:
        raise InputError(f"rid level_sizes must be positive, got {list(level_sizes)}")
    if n_items < 1:
        raise InputError(f"rid needs at least one item, got n_items={n_items}")
    space = math.prod(sizes)  # a Python int: no overflow
    if n_items > space:
        raise InputError(f"rid: {n_items} items do not fit in {sizes} (only {space} distinct codes)")
    rng = np.random.default_rng(seed)

    if space <= _CHOICE_MAX_SPACE:
        flat = rng.choice(space, size=n_items, replace=False).astype(np.int64)
        codes = np.empty((n_items, len(sizes)), dtype=np.int64)
        for level in range(len(sizes) - 1, -1, -1):
            flat, codes[:, level] = np.divmod(flat, sizes[level])
        return codes

    codes = np.stack([rng.integers(0, s, size=n_items, dtype=np.int64) for s in sizes], axis=1)
    while True:
        _, first = np.unique(codes, axis=0, return_index=True)
        dup = np.setdiff1d(np.arange(n_items), first)
        if len(dup) == 0:
            return codes
        codes[dup] = np.stack([rng.integers(0, s, size=len(dup), dtype=np.int64) for s in sizes], axis=1)


_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def parse_index(
    index: Mapping[str, Sequence[str]] | str | os.PathLike, item_ids: Sequence
) -> np.ndarray:
    """Codes from a reference ``<D>.index.json``, row i for ``item_ids[i]``.

    Args:
        index: the parsed JSON mapping, or a path to the file.
        item_ids: our items in dense-index order; looked up as ``str(item_id)``.
            Index entries for other items (e.g. removed by filtering) are ignored.

    Raises ``InputError`` naming the item for: missing items, empty or unequal-length
    code lists, and tokens that are not ``<x_N>`` with the letter of their position
    (``a`` for level 0, ``b`` for level 1, ...).
    """
    source = "index"
    if isinstance(index, (str, os.PathLike)):
        source = str(index)
        try:
            with open(index, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read semantic-ID index {source}: {e}") from e
    if not isinstance(index, Mapping):
        raise InputError(f"{source}: expected a JSON object {{item_id: [tokens]}}, got {type(index).__name__}")

    keys = [str(i) for i in item_ids]
    if not keys:
        raise InputError("parse_index needs at least one item id")
    missing = [k for k in keys if k not in index]
    if missing:
        raise InputError(
            f"{source}: {len(missing)} of {len(keys)} items have no semantic ID, e.g. {missing[:10]}"
        )
    rows = [index[k] for k in keys]
    bad_type = [k for k, r in zip(keys, rows) if not isinstance(r, (list, tuple)) or not r]
    if bad_type:
        raise InputError(f"{source}: items {bad_type[:10]} must map to a non-empty list of tokens")
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    n_levels = int(np.bincount(lengths).argmax())
    if (lengths != n_levels).any():
        odd = [keys[i] for i in np.flatnonzero(lengths != n_levels)[:10]]
        raise InputError(
            f"{source}: code lists have unequal lengths {sorted(set(lengths.tolist()))}; "
            f"most have {n_levels}, these differ: {odd}"
        )
    if n_levels > 26:
        raise InputError(f"{source}: {n_levels} levels; at most 26 (<a_..> to <z_..>) are supported")

    flat = [t for r in rows for t in r]
    matches = [_TOKEN.fullmatch(t) if isinstance(t, str) else None for t in flat]
    letters = np.array([m.group(1) if m else "" for m in matches]).reshape(-1, n_levels)
    expected = np.array([chr(ord("a") + level) for level in range(n_levels)])
    bad = np.flatnonzero((letters != expected[None, :]).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise InputError(
            f"{source}: malformed semantic-ID tokens for {len(bad)} item(s), e.g. item {keys[i]!r}: "
            f"{list(rows[i])}; expected {[f'<{c}_N>' for c in expected]}"
        )
    return np.array([int(m.group(2)) for m in matches], dtype=np.int64).reshape(-1, n_levels)
