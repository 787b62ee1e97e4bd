import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers import (
    check_bijection,
    collision_rate,
    is_bijection,
    level_stats,
    resolve_collisions,
)


def test_hand_example():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2], [0, 0], [3, 3]])
    table, stats = resolve_collisions(codes)
    np.testing.assert_array_equal(table[:, :2], codes)
    np.testing.assert_array_equal(table[:, 2], [0, 1, 0, 2, 1, 0])
    assert table.dtype == np.int64
    assert stats["unique_ratio"] == pytest.approx(3 / 6)
    assert stats["collision_rate"] == pytest.approx(0.5)
    assert stats["n_colliding_items"] == 5
    assert stats["n_collision_groups"] == 2
    assert stats["max_group_size"] == 3
    assert stats["added_level"] is True
    assert stats["n_disambiguation_codes"] == 3
    assert stats["level_sizes"] == [4, 4, 3]  # inferred max+1, plus the new level
    assert stats["usage"] == pytest.approx([3 / 4, 3 / 4, 1.0])
    assert is_bijection(table) and not is_bijection(codes)


def test_no_collision_keeps_table():
    codes = np.array([[0, 1], [1, 0], [1, 1]], dtype=np.int32)
    table, stats = resolve_collisions(codes, level_sizes=[2, 4])
    assert table.shape == (3, 2)
    np.testing.assert_array_equal(table, codes)
    assert stats["added_level"] is False
    assert stats["n_disambiguation_codes"] == 0
    assert stats["unique_ratio"] == 1.0 and stats["max_group_size"] == 1
    assert stats["level_sizes"] == [2, 4]
    assert stats["usage"] == pytest.approx([1.0, 0.5])


def test_usage_and_entropy():
    codes = np.array([[0, 0], [1, 0], [2, 0], [3, 0]])
    stats = level_stats(codes, [4, 8])
    assert stats["usage"] == pytest.approx([1.0, 1 / 8])
    assert stats["entropy"] == pytest.approx([1.0, 0.0])  # uniform over all 4; a single code
    # two of four codes, equally used: H = log 2, normalized by log 4
    stats = level_stats(np.array([[0], [0], [3], [3]]), [4])
    assert stats["entropy"][0] == pytest.approx(0.5)


def test_collision_rate_definition():
    assert collision_rate(np.array([[0], [0], [0], [1]])) == pytest.approx(0.5)
    assert collision_rate(np.array([[0], [1]])) == 0.0


def test_check_bijection_names_items_and_range():
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        check_bijection(np.array([[5, 1], [0, 0], [5, 1]]))
    with pytest.raises(InputError, match="outside the codebook"):
        check_bijection(np.array([[0, 3], [1, 1]]), level_sizes=[2, 3])
    check_bijection(np.array([[0, 2], [1, 1]]), level_sizes=[2, 3])


def test_rejects_bad_input():
    with pytest.raises(InputError, match="2-d"):
        resolve_collisions(np.arange(4))
    with pytest.raises(InputError, match="negative"):
        resolve_collisions(np.array([[0], [-1]]))
    with pytest.raises(InputError, match="integers"):
        resolve_collisions(np.array([[0.5], [1.0]]))


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 60), st.integers(1, 3)), elements=st.integers(0, 3)))
def test_resolution_is_stable_bijection(codes):
    table, stats = resolve_collisions(codes)
    assert is_bijection(table)
    np.testing.assert_array_equal(table[:, : codes.shape[1]], codes)
    n_unique = len(np.unique(codes, axis=0))
    assert stats["unique_ratio"] == pytest.approx(n_unique / len(codes))
    if n_unique == len(codes):
        assert table.shape == codes.shape and not stats["added_level"]
        return
    extra = table[:, -1]
    # inside each group the extra codes are 0, 1, 2, ... in item-index order
    for row in np.unique(codes, axis=0):
        members = np.flatnonzero((codes == row).all(axis=1))
        np.testing.assert_array_equal(extra[members], np.arange(len(members)))
    assert stats["n_disambiguation_codes"] == extra.max() + 1 == stats["max_group_size"]
