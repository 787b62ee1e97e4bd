import warnings

import numpy as np
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers import is_bijection, resolve_collisions, rqkmeans


def _hierarchical(n_per_leaf=20, branch=(6, 5), dim=16, seed=0):
    """Items around leaves of a 2-level tree: top clusters far apart, sub-clusters closer."""
    rng = np.random.default_rng(seed)
    top = rng.normal(0, 10.0, (branch[0], dim))
    sub = rng.normal(0, 2.0, (branch[0], branch[1], dim))
    labels = np.stack(np.meshgrid(np.arange(branch[0]), np.arange(branch[1]), indexing="ij"), -1).reshape(-1, 2)
    labels = np.repeat(labels, n_per_leaf, axis=0)
    x = top[labels[:, 0]] + sub[labels[:, 0], labels[:, 1]] + rng.normal(0, 0.1, (len(labels), dim))
    return x.astype(np.float32), labels


def _residual_mse(x, codes):
    """Greedy residual error of a code table with the best (mean) centroid per code and level."""
    r = x.astype(np.float64).copy()
    for level in range(codes.shape[1]):
        c = codes[:, level]
        sums = np.zeros((c.max() + 1, x.shape[1]))
        np.add.at(sums, c, r)
        r -= (sums / np.maximum(np.bincount(c), 1)[:, None])[c]
    return float((r**2).sum(1).mean())


def test_recovers_hierarchy_and_beats_random_codes():
    x, labels = _hierarchical()
    res = rqkmeans(x, n_levels=2, codebook_size=[6, 5], seed=0, niter=25, init="kmeans++")
    # every true top cluster maps to one level-0 code and vice versa
    pairs = np.unique(np.stack([labels[:, 0], res.codes[:, 0]], 1), axis=0)
    assert len(pairs) == 6
    assert res.level_mse[1] < res.level_mse[0]
    assert res.reconstruction_mse == pytest.approx(_residual_mse(x, res.codes), rel=1e-3)
    rng = np.random.default_rng(0)
    random_codes = np.stack([rng.integers(0, 6, len(x)), rng.integers(0, 5, len(x))], 1)
    random_mse = _residual_mse(x, random_codes)
    assert res.reconstruction_mse < 0.1 * random_mse
    err = ((x - res.reconstruct()) ** 2).sum(1).mean()
    assert err == pytest.approx(res.reconstruction_mse, rel=1e-4)


def test_deterministic_for_seed():
    x, _ = _hierarchical(seed=1)
    a = rqkmeans(x, n_levels=3, codebook_size=16, seed=7)
    b = rqkmeans(x, n_levels=3, codebook_size=16, seed=7)
    c = rqkmeans(x, n_levels=3, codebook_size=16, seed=8)
    assert a.codes.tobytes() == b.codes.tobytes()
    assert all(p.tobytes() == q.tobytes() for p, q in zip(a.centroids, b.centroids))
    assert a.level_mse == b.level_mse
    assert not all(np.array_equal(p, q) for p, q in zip(a.centroids, c.centroids))


def test_any_codebook_size_and_shapes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))  # float64 input is accepted
    res = rqkmeans(x, n_levels=3, codebook_size=[7, 5, 3], seed=0)
    assert res.codes.shape == (400, 3) and res.codes.dtype == np.int64
    assert res.level_sizes == (7, 5, 3)
    assert [cb.shape for cb in res.centroids] == [(7, 8), (5, 8), (3, 8)]
    assert (res.codes.max(0) < [7, 5, 3]).all() and res.codes.min() >= 0
    # all codes used at every level (faiss splits empty clusters)
    assert [len(np.unique(res.codes[:, level])) for level in range(3)] == [7, 5, 3]
    assert all(b <= a for a, b in zip(res.level_mse, res.level_mse[1:]))


def test_table_becomes_bijection():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    res = rqkmeans(x, n_levels=2, codebook_size=4, seed=0)  # 16 codes for 300 items: must collide
    table, stats = resolve_collisions(res.codes, res.level_sizes)
    assert stats["added_level"] and stats["unique_ratio"] <= 16 / 300
    assert is_bijection(table) and table.shape == (300, 3)


def test_rejects_nan_and_inf_naming_rows():
    x = np.ones((10, 4), dtype=np.float32)
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(InputError, match=r"2 row\(s\).*\[3, 7\]"):
        rqkmeans(x, codebook_size=2)
    with pytest.raises(InputError, match="2-d"):
        rqkmeans(np.ones(5), codebook_size=2)


def test_codebook_larger_than_items():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(InputError, match="exceeds the number of items 20"):
        rqkmeans(x, codebook_size=32, on_too_few_items="error")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = rqkmeans(x, n_levels=2, codebook_size=32)
    assert any("capping codebooks at 20" in str(w.message) for w in caught)
    assert res.level_sizes == (20, 20)
    assert is_bijection(res.codes)  # one cluster per item at level 0
    assert res.reconstruction_mse == pytest.approx(0.0, abs=1e-6)
