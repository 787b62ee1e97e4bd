import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers import cid, is_bijection, parse_index, rid

# ------------------------------------------------------------------ cid


def test_cid_hand_computation():
    # item 7 in base 3: 7 = 1 + 2*3 -> digits (1, 2, 0), least significant first
    codes = cid(10, base=3)
    assert codes.shape == (10, 3)  # 3**2 = 9 < 10 items
    np.testing.assert_array_equal(codes[7], [1, 2, 0])
    np.testing.assert_array_equal(codes[9], [0, 0, 1])
    np.testing.assert_array_equal(codes[:4], [[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]])
    assert cid(9, base=3).shape == (9, 2)
    assert cid(1, base=64).shape == (1, 1)
    np.testing.assert_array_equal(cid(300, base=256)[299], [43, 1])  # 299 = 43 + 256


def test_cid_shuffle():
    plain = cid(50, base=4)
    a, b = cid(50, base=4, shuffle=True, seed=1), cid(50, base=4, shuffle=True, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain)
    # same set of codes, permuted over items
    assert sorted(map(tuple, a)) == sorted(map(tuple, plain))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3000), st.integers(2, 300), st.booleans())
def test_cid_bijection(n, base, shuffle):
    codes = cid(n, base=base, shuffle=shuffle, seed=0)
    assert is_bijection(codes) and codes.min() >= 0 and codes.max() < base
    assert base ** codes.shape[1] >= n and (codes.shape[1] == 1 or base ** (codes.shape[1] - 1) < n)
    decoded = (codes * base ** np.arange(codes.shape[1])).sum(1)
    assert sorted(decoded.tolist()) == list(range(n))
    if not shuffle:
        np.testing.assert_array_equal(decoded, np.arange(n))


def test_cid_errors():
    with pytest.raises(InputError):
        cid(0)
    with pytest.raises(InputError):
        cid(10, base=1)


# ------------------------------------------------------------------ rid


def test_rid_huge_space_without_allocating_it():
    tracemalloc.start()
    try:
        codes = rid(100_000, [256] * 4, seed=0)  # 2**32 codes: 32 GiB if materialised
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
    assert codes.shape == (100_000, 4) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() <= 255
    assert is_bijection(codes)
    assert abs(codes[:, 0].mean() - 127.5) < 2.0  # top digit is uniform, not clustered at 0


def test_rid_beyond_int64():
    codes = rid(20_000, [2**16] * 4, seed=0)  # 2**64 codes: the digit-wise path
    assert is_bijection(codes) and codes.min() >= 0 and codes.max() < 2**16
    assert abs(codes[:, 0].mean() - 32767.5) < 1500


def test_rid_dense_and_errors():
    codes = rid(30, [5, 6], seed=3)
    assert sorted(map(tuple, codes)) == [(a, b) for a in range(5) for b in range(6)]
    np.testing.assert_array_equal(rid(30, [5, 6], seed=3), codes)
    assert not np.array_equal(rid(30, [5, 6], seed=4), codes)
    with pytest.raises(InputError, match="do not fit"):
        rid(31, [5, 6])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=4), st.integers(1, 500), st.integers(0, 2**16))
def test_rid_unique_in_range(sizes, n, seed):
    n = min(n, int(np.prod(sizes)))
    codes = rid(n, sizes, seed=seed)
    assert codes.shape == (n, len(sizes)) and is_bijection(codes)
    assert codes.min() >= 0 and (codes.max(0) < sizes).all()


# ------------------------------------------------------------------ given


def _index(codes, ids):
    return {str(i): [f"<{chr(97 + level)}_{c}>" for level, c in enumerate(row)] for i, row in zip(ids, codes)}


def test_parse_index_file_aligned_to_item_order(tmp_path):
    index = {"10": ["<a_183>", "<b_70>", "<c_0>"], "3": ["<a_1>", "<b_2>", "<c_3>"], "99": ["<a_5>", "<b_5>", "<c_5>"]}
    path = tmp_path / "D.index.json"
    path.write_text(json.dumps(index, indent=4))
    codes = parse_index(path, item_ids=[3, 10])  # item 99 (filtered out upstream) is ignored
    np.testing.assert_array_equal(codes, [[1, 2, 3], [183, 70, 0]])
    assert codes.dtype == np.int64


@pytest.mark.parametrize(
    "index, match",
    [
        ({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_x>"]}, "malformed.*'1'"),
        ({"0": ["<a_1>", "<b_2>"], "1": ["<b_1>", "<a_2>"]}, "malformed.*'1'"),
        ({"0": ["<a_1>", "<b_2>"], "1": ["a_1", "b_2"]}, "malformed"),
        ({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", 7]}, "malformed"),
        ({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>"]}, r"unequal lengths \[1, 2\]"),
        ({"0": ["<a_1>", "<b_2>"]}, r"1 of 2 items have no semantic ID, e.g. \['1'\]"),
        ({"0": ["<a_1>"], "1": []}, "non-empty list"),
        ({"0": ["<a_1>"], "1": "<a_2>"}, "non-empty list"),
        ([["<a_1>"]], "expected a JSON object"),
    ],
)
def test_parse_index_rejects_malformed(index, match):
    with pytest.raises(InputError, match=match):
        parse_index(index, item_ids=["0", "1"])


def test_parse_index_bad_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        parse_index(tmp_path / "bad.json", ["0"])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(1, 8), st.integers(0, 1000))
def test_parse_index_roundtrip(n, n_levels, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 300, size=(n, n_levels))
    ids = rng.permutation(10 * n)[:n]
    np.testing.assert_array_equal(parse_index(_index(codes, ids), ids), codes)
