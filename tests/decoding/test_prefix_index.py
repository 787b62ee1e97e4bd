"""The tensor trie against a plain Python dict-of-dicts trie (the reference's structure)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqrec_pipeline.decoding import PrefixIndex
from seqrec_pipeline.errors import InputError

from .helpers import random_codes


def dict_trie(codes: np.ndarray, items: np.ndarray) -> dict:
    """Nested dicts code -> ...; leaves hold the item index."""
    root: dict = {}
    for item in items:
        node = root
        for code in codes[item, :-1]:
            node = node.setdefault(int(code), {})
        node[int(codes[item, -1])] = int(item)
    return root


def check_against_dict_trie(index: PrefixIndex, codes: np.ndarray, catalogs: list[np.ndarray]) -> None:
    """Walk every prefix of every catalog's dict trie through the index: same children, same leaves."""
    n_levels = codes.shape[1]
    for catalog, items in enumerate(catalogs):
        frontier = [((), dict_trie(codes, items), index.roots(torch.tensor([catalog])))]
        n_leaves = 0
        while frontier:
            prefix, node, node_id = frontier.pop()
            level = len(prefix)
            allowed = index.allowed(node_id, level)[0]
            assert sorted(torch.nonzero(allowed).flatten().tolist()) == sorted(node), (catalog, prefix)
            children = torch.tensor(sorted(node))
            child_ids = index.child(node_id.expand(len(children)), level, children)
            assert (child_ids >= 0).all()
            if level + 1 == n_levels:
                items_found = index.item_of(child_ids).tolist()
                assert items_found == [node[c] for c in sorted(node)]
                n_leaves += len(children)
            else:
                frontier += [(prefix + (c,), node[c], child_ids[i : i + 1]) for i, c in enumerate(sorted(node))]
        assert n_leaves == len(items)


@pytest.mark.parametrize("dense_max_entries", [0, 10**9, 40], ids=["csr", "dense", "mixed"])
def test_one_catalog_matches_a_dict_trie(dense_max_entries):
    codes = random_codes((4, 5, 6), 70, seed=1)
    index = PrefixIndex.build(codes, (4, 5, 6), dense_max_entries=dense_max_entries)
    if dense_max_entries == 40:  # 1x4 and 4x5 entries are dense, the deeper levels sparse
        assert [index.is_dense(level) for level in range(3)] == [True, True, False]
    check_against_dict_trie(index, codes, [np.arange(len(codes))])
    assert index.num_nodes(3) == len(codes)


def test_behavior_catalogs_are_separate_tries():
    codes = random_codes((3, 4, 5), 40, seed=2)
    mask = np.random.default_rng(0).random((3, 40)) < 0.5
    mask[2] = False
    mask[2, [5, 7]] = True
    index = PrefixIndex.build(codes, (3, 4, 5), catalogs=mask, dense_max_entries=12)
    assert index.catalog_sizes == tuple(int(m.sum()) for m in mask)
    catalogs = [np.flatnonzero(m) for m in mask]
    check_against_dict_trie(index, codes, catalogs)
    for c, items in enumerate(catalogs):
        assert sorted(index.items_of_catalog(c).tolist()) == items.tolist()
    # Same result from index lists.
    again = PrefixIndex.build(codes, (3, 4, 5), catalogs=catalogs)
    check_against_dict_trie(again, codes, catalogs)


@pytest.mark.parametrize("dense_max_entries", [0, 10**9])
def test_dead_nodes_and_missing_edges(dense_max_entries):
    codes = np.array([[0, 1], [0, 2], [2, 0]])
    index = PrefixIndex.build(codes, (3, 3), dense_max_entries=dense_max_entries)
    root = torch.tensor([0, -1])
    assert index.allowed(root, 0).tolist() == [[True, False, True], [False, False, False]]
    assert index.child(torch.tensor([0, 0, -1, 0]), 0, torch.tensor([1, 0, 0, 7])).tolist()[1:] == [0, -1, -1]
    assert index.child(torch.tensor([0]), 0, torch.tensor([1])).item() == -1  # code 1 starts no item
    node = index.child(torch.tensor([0]), 0, torch.tensor([0]))
    assert index.allowed(node, 1).tolist() == [[False, True, True]]
    leaves = index.child(node.expand(3), 1, torch.tensor([1, 2, 0]))
    assert index.item_of(leaves).tolist() == [0, 1, -1]
    assert index.item_of(torch.tensor([-1])).tolist() == [-1]


def test_bad_tables_are_rejected():
    with pytest.raises(InputError, match="same code sequence"):
        PrefixIndex.build(np.array([[0, 1], [1, 1], [0, 1]]))
    with pytest.raises(InputError, match="exceed"):
        PrefixIndex.build(np.array([[0, 3]]), level_sizes=(2, 2))
    with pytest.raises(InputError, match="integer"):
        PrefixIndex.build(np.array([[0.5, 1.0]]))
    # A collision only matters inside one catalog.
    PrefixIndex.build(np.array([[0, 1], [0, 1]]), catalogs=[[0], [1]])


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    fraction=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
)
def test_dense_and_csr_agree_with_the_dict_trie(sizes, fraction, seed):
    space = int(np.prod(sizes))
    n_items = max(1, int(space * fraction))
    codes = random_codes(tuple(sizes), n_items, seed=seed)
    for dense_max_entries in (0, 10**9):
        index = PrefixIndex.build(codes, tuple(sizes), dense_max_entries=dense_max_entries)
        check_against_dict_trie(index, codes, [np.arange(n_items)])
