"""The item trie of a semantic-ID table, held as tensors for vectorized constrained decoding
(docs/design.md#beam-search-and-scoring).

Nodes are numbered level by level.  A node at depth ``l`` stands for a code prefix of length ``l`` inside
one *catalog*: depth 0 holds one root per catalog (root id = catalog id), depth ``L`` holds the leaves, one
per (catalog, item) entry.  The edges leaving depth ``l`` are labelled with level-``l`` codes.

Per depth, the edges are stored in CSR form sorted by (parent node, code): ``indptr[n]:indptr[n+1]`` are the
edges of node n, ``codes[e]`` the code of edge e, and **the child node id of edge e is e itself** (the nodes of
depth ``l + 1`` are numbered in that same sorted order), so no separate child array is needed.  For shallow
levels, where ``n_nodes * level_size`` is small, a dense ``[n_nodes, level_size]`` allowed-mask and child table
are kept as well; deep, sparse levels use a ``[n_nodes, max_degree]`` padded copy of the CSR codes, which makes
both lookups a fixed-shape gather (no data-dependent shapes, hence no host sync).

Catalogs: by default one catalog holds every item.  A behavior-restricted catalog (the behavior token is part
of the item; the reference, github.com/wzf2000/GAMER, builds one trie per behavior) passes one item set per
behavior; the decoders then start behavior b at root b.

Node id -1 means "dead" (an impossible prefix): it allows nothing, its children are -1 and it maps to item -1,
so beams that ran out of valid continuations need no special casing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

DEFAULT_DENSE_MAX_ENTRIES = 1 << 20  # 1M booleans (+ an int64 child table of 8 MB) per dense level


@dataclass
class _Level:
    """Edges from depth ``l`` to depth ``l + 1``."""

    n_nodes: int  # nodes at depth l (parents)
    size: int  # codebook size of level l
    indptr: torch.Tensor  # [n_nodes + 1] int64
    codes: torch.Tensor  # [n_edges] int64, sorted by (parent, code); edge index = child node id
    dense_mask: torch.Tensor | None = None  # [n_nodes, size] bool
    dense_child: torch.Tensor | None = None  # [n_nodes, size] int64, -1 where no edge
    padded_codes: torch.Tensor | None = None  # [n_nodes, max_degree] int64, -1 padding (sparse levels)

    @property
    def is_dense(self) -> bool:
        return self.dense_mask is not None

    def to(self, device: torch.device | str) -> _Level:
        moved = {
            name: (value.to(device) if isinstance(value, torch.Tensor) else value)
            for name, value in self.__dict__.items()
        }
        return _Level(**moved)


def catalog_item_lists(catalogs, n_items: int) -> list[np.ndarray]:
    """Catalogs as sorted unique item-index arrays (from a bool mask [C, n_items] or index arrays)."""
    if catalogs is None:
        return [np.arange(n_items)]
    if isinstance(catalogs, np.ndarray | torch.Tensor) and np.asarray(catalogs).dtype == bool:
        mask = np.asarray(catalogs)
        if mask.ndim != 2 or mask.shape[1] != n_items:
            raise InputError(f"a catalog mask must have shape [n_catalogs, n_items={n_items}], got {mask.shape}")
        return [np.flatnonzero(row) for row in mask]
    result = []
    for c, items in enumerate(catalogs):
        items = np.unique(np.asarray(items, dtype=np.int64))
        if items.size and (items[0] < 0 or items[-1] >= n_items):
            raise InputError(f"catalog {c} holds item indices outside 0..{n_items - 1}")
        result.append(items)
    if not result:
        raise InputError("at least one catalog is needed")
    return result


class PrefixIndex:
    """Trie over ``codes[n_items, L]`` (one forest, a root per catalog), as tensors on one device.

    Build it with :meth:`build`; query it with :meth:`allowed`, :meth:`child` and :meth:`item_of`, which take
    any number of node ids at once.
    """

    def __init__(
        self,
        levels: list[_Level],
        leaf_items: torch.Tensor,
        level_sizes: tuple[int, ...],
        catalog_sizes: tuple[int, ...],
    ) -> None:
        self._levels = levels
        self._leaf_items = leaf_items  # [n_leaves] item index of each leaf
        self.level_sizes = level_sizes
        self.catalog_sizes = catalog_sizes  # items per catalog

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        codes: np.ndarray,
        level_sizes: Sequence[int] | None = None,
        catalogs: np.ndarray | Sequence[Sequence[int]] | None = None,
        device: torch.device | str = "cpu",
        dense_max_entries: int = DEFAULT_DENSE_MAX_ENTRIES,
    ) -> PrefixIndex:
        """Index ``codes[n_items, L]`` (non-negative ints; row i = item i's code sequence).

        ``level_sizes``: codebook size per level (default ``max code + 1``; pass the vocabulary's so masks line up
        with its code tokens).  ``catalogs``: None (one catalog of every item), a bool mask ``[n_catalogs, n_items]``
        or a list of item-index arrays, one per catalog (e.g. per behavior).  A level gets dense tables when
        ``n_nodes * level_size <= dense_max_entries``.  Raises InputError if two items of one catalog share a
        code sequence (the table must be a bijection, see ``models/tokenizers/collisions.py``).
        """
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] < 1 or codes.dtype.kind not in "iu":
            raise InputError(f"codes must be an integer array [n_items, n_levels], got {codes.dtype} {codes.shape}")
        codes = codes.astype(np.int64, copy=False)
        n_items, n_levels = codes.shape
        if codes.size and codes.min() < 0:
            raise InputError("codes must be non-negative")
        if level_sizes is None:
            level_sizes = tuple(int(m) + 1 for m in codes.max(axis=0)) if n_items else (1,) * n_levels
        level_sizes = tuple(int(s) for s in level_sizes)
        if len(level_sizes) != n_levels:
            raise InputError(f"level_sizes has {len(level_sizes)} entries, codes have {n_levels} levels")
        too_big = np.flatnonzero(codes.max(axis=0) >= np.asarray(level_sizes)) if n_items else []
        if len(too_big):
            raise InputError(f"codes exceed level_sizes {level_sizes} at levels {list(too_big)}")

        catalog_items = catalog_item_lists(catalogs, n_items)
        n_catalogs = len(catalog_items)
        catalog_of_entry = np.repeat(np.arange(n_catalogs), [len(c) for c in catalog_items])
        item_of_entry = np.concatenate(catalog_items).astype(np.int64)
        # keys[e] = (catalog, c_0, ..., c_{L-1}); sorting them lexicographically lays the trie out depth-first,
        # so every depth's nodes come out sorted by (parent, code): exactly the CSR order.
        keys = np.column_stack([catalog_of_entry, codes[item_of_entry]])
        order = np.lexsort(keys.T[::-1])
        keys, item_of_entry = keys[order], item_of_entry[order]
        n_entries = len(keys)
        if n_entries == 0:
            raise InputError("every catalog is empty: nothing to decode")
        if n_entries > 1:
            same = (keys[1:] == keys[:-1]).all(axis=1)
            if same.any():
                first = int(np.flatnonzero(same)[0])
                raise InputError(
                    f"items {item_of_entry[first]} and {item_of_entry[first + 1]} have the same code sequence in "
                    f"catalog {keys[first, 0]}; resolve collisions first (models/tokenizers/collisions.py)"
                )

        levels: list[_Level] = []
        node_of_entry = keys[:, 0]  # depth 0: the roots are the catalogs
        n_nodes = n_catalogs
        for level in range(n_levels):
            new_node = np.ones(n_entries, dtype=bool)
            if n_entries > 1:
                new_node[1:] = (keys[1:, : level + 2] != keys[:-1, : level + 2]).any(axis=1)
            first_entry = np.flatnonzero(new_node)
            parent = node_of_entry[first_entry]
            edge_codes = keys[first_entry, level + 1]
            indptr = np.zeros(n_nodes + 1, dtype=np.int64)
            np.cumsum(np.bincount(parent, minlength=n_nodes), out=indptr[1:])
            levels.append(cls._level_tables(n_nodes, level_sizes[level], indptr, parent, edge_codes, dense_max_entries))
            node_of_entry = np.cumsum(new_node) - 1
            n_nodes = len(first_entry)

        index = cls(
            [lvl.to(device) for lvl in levels],
            torch.from_numpy(item_of_entry).to(device),  # leaves are the sorted entries themselves
            level_sizes,
            tuple(len(c) for c in catalog_items),
        )
        return index

    @staticmethod
    def _level_tables(
        n_nodes: int, size: int, indptr: np.ndarray, parent: np.ndarray, edge_codes: np.ndarray, dense_max_entries: int
    ) -> _Level:
        level = _Level(n_nodes, size, torch.from_numpy(indptr), torch.from_numpy(edge_codes.astype(np.int64)))
        edge_ids = np.arange(len(edge_codes), dtype=np.int64)
        if n_nodes * size <= dense_max_entries:
            mask = np.zeros((n_nodes, size), dtype=bool)
            child = np.full((n_nodes, size), -1, dtype=np.int64)
            mask[parent, edge_codes] = True
            child[parent, edge_codes] = edge_ids
            level.dense_mask, level.dense_child = torch.from_numpy(mask), torch.from_numpy(child)
        else:
            degree = np.diff(indptr)
            max_degree = max(int(degree.max()) if n_nodes else 0, 1)
            padded = np.full((n_nodes, max_degree), -1, dtype=np.int64)
            padded[parent, edge_ids - indptr[parent]] = edge_codes  # rank of each edge within its parent
            level.padded_codes = torch.from_numpy(padded)
        return level

    # ------------------------------------------------------------------ properties

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def n_catalogs(self) -> int:
        return len(self.catalog_sizes)

    @property
    def device(self) -> torch.device:
        return self._leaf_items.device

    def num_nodes(self, depth: int) -> int:
        """Nodes at ``depth`` (0 = roots, ``n_levels`` = leaves)."""
        return self._levels[depth].n_nodes if depth < self.n_levels else int(self._leaf_items.numel())

    def is_dense(self, level: int) -> bool:
        return self._levels[level].is_dense

    def to(self, device: torch.device | str) -> PrefixIndex:
        return PrefixIndex(
            [lvl.to(device) for lvl in self._levels], self._leaf_items.to(device), self.level_sizes, self.catalog_sizes
        )

    def describe(self) -> dict:
        """Sizes and storage of each level (for logs and benchmark reports)."""
        return {
            "catalog_sizes": list(self.catalog_sizes),
            "levels": [
                {"nodes": lvl.n_nodes, "size": lvl.size, "edges": int(lvl.codes.numel()),
                 "storage": "dense" if lvl.is_dense else f"csr (max degree {lvl.padded_codes.shape[1]})"}
                for lvl in self._levels
            ],
        }  # fmt: skip

    # ------------------------------------------------------------------ queries (vectorized, no host sync)

    def roots(self, catalog_ids: torch.Tensor) -> torch.Tensor:
        """Root node of each catalog id (depth-0 node ids are the catalog ids)."""
        return catalog_ids.to(device=self.device, dtype=torch.long)

    def allowed(self, nodes: torch.Tensor, level: int) -> torch.Tensor:
        """Bool mask ``[n, level_size]``: which level-``level`` codes continue each depth-``level`` node."""
        table = self._levels[level]
        alive = nodes >= 0
        safe = nodes.clamp(min=0)
        if table.is_dense:
            return table.dense_mask[safe] & alive[:, None]
        rows = table.padded_codes[safe]  # [n, max_degree], -1 padding
        valid = (rows >= 0) & alive[:, None]
        # Scatter into one spare column (index ``size``) for padding, then drop it: a fixed-shape operation.
        mask = torch.zeros(nodes.shape[0], table.size + 1, dtype=torch.bool, device=nodes.device)
        mask.scatter_(1, torch.where(valid, rows, table.size), True)
        return mask[:, : table.size]

    def child(self, nodes: torch.Tensor, level: int, codes: torch.Tensor) -> torch.Tensor:
        """Depth-``level + 1`` node reached from each node by its code; -1 if that edge does not exist."""
        table = self._levels[level]
        codes = codes.to(torch.long)
        valid = (nodes >= 0) & (codes >= 0) & (codes < table.size)
        safe = nodes.clamp(min=0)
        if table.is_dense:
            child = table.dense_child[safe, codes.clamp(0, table.size - 1)]
        else:
            match = table.padded_codes[safe] == codes[:, None]  # [n, max_degree]
            rank = match.to(torch.int8).argmax(dim=1)
            child = torch.where(match.any(dim=1), table.indptr[safe] + rank, -1)
        return torch.where(valid, child, -1)

    def item_of(self, leaves: torch.Tensor) -> torch.Tensor:
        """Item index of each leaf node; -1 for dead nodes."""
        return torch.where(leaves >= 0, self._leaf_items[leaves.clamp(min=0)], -1)

    def items_of_catalog(self, catalog: int) -> torch.Tensor:
        """Item indices of one catalog, in code order (for tests and reports)."""
        start = sum(self.catalog_sizes[:catalog])
        return self._leaf_items[start : start + self.catalog_sizes[catalog]]
