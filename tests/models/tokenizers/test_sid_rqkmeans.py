import importlib
import warnings

import numpy as np
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers import is_bijection, resolve_collisions, rqkmeans, spread_last_level


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
    # faiss on all items, no refinement: greedy centroids are per-level means, which _residual_mse recomputes
    res = rqkmeans(x, n_levels=2, codebook_size=[6, 5], seed=0, sample_iters=25, sample_points_per_centroid=10**6,
                   full_iters=0, init="kmeans++", refine_iters=0)
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


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_deterministic_for_seed(precision):
    x, _ = _hierarchical(seed=1)
    a = rqkmeans(x, n_levels=3, codebook_size=16, seed=7, precision=precision)
    b = rqkmeans(x, n_levels=3, codebook_size=16, seed=7, precision=precision)
    c = rqkmeans(x, n_levels=3, codebook_size=16, seed=8, precision=precision)
    assert a.precision == precision
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


# --- collision-aware last level (spread_last_level / balance_last_level) and refinement ---


def _n_collisions(codes):
    return len(codes) - len(np.unique(codes, axis=0))


def _tight_clusters_and_a_broad_one(seed=0, dim=8, n_broad=100):
    """A broad cluster (one level-0 code) that shapes the last level, plus 12 tight clusters
    of 6 items whose residuals are near zero: plain residual k-means sends each tight
    cluster to a single last-level code."""
    rng = np.random.default_rng(seed)
    broad = rng.normal(0, 1.0, (n_broad, dim))
    centers = rng.normal(0, 20.0, (12, dim))
    tight = np.repeat(centers, 6, axis=0) + rng.normal(0, 1e-3, (72, dim))
    return np.concatenate([broad, tight]).astype(np.float32)


def test_balancing_raises_unique_ratio_where_plain_collides():
    x = _tight_clusters_and_a_broad_one()
    kw = dict(n_levels=2, codebook_size=[13, 32], seed=0, init="kmeans++")
    plain = rqkmeans(x, balance_last_level=False, **kw)
    balanced = rqkmeans(x, balance_last_level=True, **kw)
    assert np.bincount(plain.codes[:, 0]).max() == 100  # the broad cluster is one prefix
    assert np.array_equal(plain.codes[:, 0], balanced.codes[:, 0])  # only the last level moves
    assert _n_collisions(plain.codes[100:]) == 60  # each tight cluster shares one code
    assert _n_collisions(balanced.codes[100:]) == 0
    # 100 broad items over 32 codes must leave 68 collisions; nothing else collides
    assert _n_collisions(plain.codes) > _n_collisions(balanced.codes) == 100 - 32
    assert (balanced.codes >= 0).all() and (balanced.codes < np.array(balanced.level_sizes)).all()
    assert balanced.reconstruction_mse < 1.5 * plain.reconstruction_mse
    err = ((x - balanced.reconstruct()) ** 2).sum(1).mean()
    assert err == pytest.approx(balanced.reconstruction_mse, rel=1e-4)
    again = rqkmeans(x, balance_last_level=True, **kw)
    assert again.codes.tobytes() == balanced.codes.tobytes()
    assert all(p.tobytes() == q.tobytes() for p, q in zip(again.centroids, balanced.centroids))


@pytest.mark.parametrize("seed", range(8))
def test_spread_last_level_never_adds_collisions(seed):
    rng = np.random.default_rng(seed)
    n, k, dim = 400, int(rng.integers(2, 12)), 5
    codes = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, k, n)], 1)
    target = rng.normal(size=(n, dim)).astype(np.float32)
    centroids = rng.normal(size=(k, dim)).astype(np.float32)
    out = spread_last_level(codes, target, centroids)
    assert out.dtype == np.int64 and out.shape == codes.shape
    assert np.array_equal(out[:, :-1], codes[:, :-1])
    assert out[:, -1].min() >= 0 and out[:, -1].max() < k
    assert _n_collisions(out) <= _n_collisions(codes)
    # per prefix, the number of distinct codes becomes min(k, items of the prefix)
    for p in np.unique(codes[:, :-1], axis=0):
        rows = (codes[:, :-1] == p).all(1)
        assert len(np.unique(out[rows, -1])) == min(k, rows.sum())
    # items that did not collide keep their code
    _, inv, cnt = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    alone = cnt[inv.reshape(-1)] == 1
    assert np.array_equal(out[alone], codes[alone])
    assert np.array_equal(spread_last_level(codes, target, centroids), out)  # deterministic
    if _n_collisions(out) == 0:
        assert np.array_equal(spread_last_level(out, target, centroids), out)  # nothing left to spread


def test_spread_last_level_moves_to_the_nearest_free_code():
    centroids = np.array([[0.0], [1.0], [10.0]], dtype=np.float32)
    codes = np.array([[0, 0], [0, 0], [0, 0], [1, 0]])
    target = np.array([[0.1], [0.9], [0.2], [0.0]], dtype=np.float32)
    out = spread_last_level(codes, target, centroids)
    # prefix 0: item 0 is closest to code 0 and keeps it, item 1 -> 1, item 2 -> 2 (last free)
    assert out[:, 1].tolist() == [0, 1, 2, 0]


def test_nearest_free_code_chunk_by_chunk_equals_the_full_distance_matrix():
    from seqrec_pipeline.models.tokenizers.rqkmeans import _nearest_free

    rng = np.random.default_rng(4)
    rows = rng.normal(size=(500, 8)).astype(np.float32)
    centroids = rng.normal(size=(16, 8))
    prefix = rng.integers(0, 5, 500)
    taken = rng.random((5, 16)) < 0.5
    taken[3] = True  # nothing free for prefix 3
    open_rows = np.sort(rng.choice(500, 300, replace=False))
    t = rows[open_rows].astype(np.float64)
    dist = ((t[:, None, :] - centroids[None]) ** 2).sum(-1)
    dist[taken[prefix[open_rows]]] = np.inf
    for chunk in (1, 7, 4096):
        best, best_d = _nearest_free(rows, open_rows, centroids, taken, prefix, chunk=chunk)
        free = np.isfinite(dist).any(1)
        assert np.array_equal(best[free], dist[free].argmin(1))
        np.testing.assert_allclose(best_d[free], dist[free].min(1), rtol=1e-9, atol=1e-9)
        assert np.all(np.isinf(best_d[~free])) and (~free).sum() == (prefix[open_rows] == 3).sum() > 0
    np.testing.assert_array_equal(_nearest_free(rows, open_rows, centroids, taken, prefix, chunk=7)[1],
                                  _nearest_free(rows, open_rows, centroids, taken, prefix, chunk=4096)[1])


def test_refinement_never_increases_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    kw = dict(n_levels=3, codebook_size=16, seed=0, sample_iters=5, full_iters=0, balance_last_level=False)
    greedy = rqkmeans(x, refine_iters=0, **kw)
    refined = rqkmeans(x, refine_iters=3, **kw)
    assert refined.reconstruction_mse <= greedy.reconstruction_mse * (1 + 1e-6)
    assert refined.reconstruction_mse < greedy.reconstruction_mse
    err = ((x - refined.reconstruct()) ** 2).sum(1).mean()
    assert err == pytest.approx(refined.reconstruction_mse, rel=1e-4)
    with pytest.raises(InputError, match="refine_iters"):
        rqkmeans(x, refine_iters=-1, **kw)


def test_chunked_refine_step_equals_reassign_and_mean():
    """_refine_level (chunked, means via residual sums + code contingency) == the plain formulation."""
    from seqrec_pipeline.models.tokenizers.rqkmeans import _refine_level

    rng = np.random.default_rng(1)
    residual = rng.normal(size=(1000, 8)).astype(np.float32)
    centroids = rng.normal(size=(7, 8)).astype(np.float32)
    codes = rng.integers(0, 6, size=1000)
    centroids[6] += 50.0  # far away and unused: gets no items and must keep its old value
    target = residual + centroids[codes]
    expected_codes = ((target[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    expected = centroids.copy()
    for j in np.unique(expected_codes):
        expected[j] = target[expected_codes == j].mean(0)

    got_codes, got = _refine_level(residual, codes.copy(), centroids, chunk=64)
    assert got_codes.tolist() == expected_codes.tolist()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[6], centroids[6])
    np.testing.assert_allclose(residual, target - got[got_codes], rtol=1e-4, atol=1e-5)  # updated in place


# --- the sample / full-data / precision steps ---


def test_bf16_assignment_matches_exact_despite_a_large_offset():
    """Scores are computed on data and centroids shifted by the data mean, so a common offset of 1000 (which
    bfloat16's 8-bit mantissa could not resolve around) does not change the nearest centroid."""
    import torch

    from seqrec_pipeline.models.tokenizers.rqkmeans import _assign, _assign_bf16

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (10, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 3000)
    x = (1000.0 + centers[labels] + rng.normal(0, 0.05, (3000, 16))).astype(np.float32)
    centroids = (1000.0 + centers).astype(np.float32)
    shift = x.mean(0)
    got = _assign_bf16(torch.from_numpy(x - shift).bfloat16(), centroids, shift, chunk=256)
    assert got.tolist() == labels.tolist()
    assert got.tolist() == _assign(x, centroids).tolist()
    unshifted = _assign_bf16(torch.from_numpy(x).bfloat16(), centroids, np.zeros(16, np.float32))
    assert (unshifted != labels).mean() > 0.5  # what the shift is for


def test_precisions_reach_the_same_quality():
    x, labels = _hierarchical()
    # the full-data iterations do the work here: one faiss iteration, no refinement
    kw = dict(n_levels=2, codebook_size=[6, 5], seed=0, init="kmeans++", sample_iters=1, full_iters=24,
              refine_iters=0)
    bf16 = rqkmeans(x, precision="bf16", **kw)
    fp32 = rqkmeans(x, precision="fp32", **kw)
    for res in (bf16, fp32):
        assert len(np.unique(np.stack([labels[:, 0], res.codes[:, 0]], 1), axis=0)) == 6
    assert (bf16.codes == fp32.codes).mean() > 0.99
    assert bf16.reconstruction_mse == pytest.approx(fp32.reconstruction_mse, rel=0.01)


def test_auto_precision_follows_the_cpu(monkeypatch):
    module = importlib.import_module("seqrec_pipeline.models.tokenizers.rqkmeans")

    x, _ = _hierarchical(seed=3)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(module, "native_bf16", lambda native=native: native)
        assert rqkmeans(x, n_levels=2, codebook_size=4, seed=0).precision == expected
    with pytest.raises(InputError, match=r"precision must be one of \['auto', 'bf16', 'fp32'\], got 'fp16'"):
        rqkmeans(x, n_levels=2, codebook_size=4, precision="fp16")
    for name in ("sample_iters", "sample_points_per_centroid"):
        with pytest.raises(InputError, match=f"{name} must be >= 1, got 0"):
            rqkmeans(x, n_levels=2, codebook_size=4, **{name: 0})


def test_sampled_first_step_still_codes_every_item():
    """faiss fits on a seeded sample of k * sample_points_per_centroid items; every item is coded after it."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    kw = dict(n_levels=2, codebook_size=8, seed=1, sample_points_per_centroid=16, full_iters=2)
    a, b = rqkmeans(x, **kw), rqkmeans(x, **kw)
    assert a.codes.tobytes() == b.codes.tobytes()
    assert [len(np.unique(a.codes[:, level])) for level in range(2)] == [8, 8]
    err = ((x - a.reconstruct()) ** 2).sum(1).mean()
    assert err == pytest.approx(a.reconstruction_mse, rel=1e-4)
    whole = rqkmeans(x, **(kw | {"sample_points_per_centroid": 10**6}))
    assert whole.reconstruction_mse != a.reconstruction_mse  # the sample size is used
