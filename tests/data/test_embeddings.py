import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from seqrec_pipeline.data.embeddings import (
    _in_past,
    _pair_counts,
    ppmi_matrix,
    _training_events,
    cf_embeddings,
    cf_solver,
    clean_text,
    embed_items,
    item_texts,
    probe_ndcg,
    randomized_svd,
)
from seqrec_pipeline.data.preprocess import build_primary
from seqrec_pipeline.dataset_spec import FilterSpec
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.params import EmbedParams, validate
from tests.conftest import base_parameters

LEVELS = {"view": 0, "buy": 1}


def _cf(**changes) -> EmbedParams:
    return validate(EmbedParams, base_parameters()["embed"] | changes, prefix="embed.")


def test_clean_text():
    assert clean_text("  <p>Great&amp;cheap</p>\n\n tool ", 100) == "Great&cheap tool"
    assert clean_text("one two three four", 9) == "one two"  # cut at a word boundary
    assert clean_text(None, 10) == ""


def test_item_texts_join_fields_and_skip_empty_ones():
    items = pl.DataFrame({"item_idx": [0, 1], "item_id": ["a", "b"], "n_events": [1, 1],
                          "title": ["Toy Story", None], "year": ["1995", ""]})
    assert item_texts(items, None, 200) == ["title: Toy Story; year: 1995", ""]
    with pytest.raises(InputError, match=r"embed.text_fields \['genre'\]"):
        item_texts(items, ["genre"], 200)


def _primary(rows):
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "timestamp"], orient="row").with_columns(
        pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8), pl.col("timestamp").cast(pl.Int64),
        pl.lit(None, dtype=pl.Utf8).alias("session_id"), pl.int_range(1, len(rows) + 1, dtype=pl.Int64).alias("source_row"))
    return build_primary(events, LEVELS, FilterSpec(min_user_events=1, min_item_events=1), 30)


def _log(rng, last_items):
    rows = []
    for u in range(30):
        for s in range(4):  # 4 sessions, 3 events each, 2 hours apart
            for e in range(3):
                item = last_items[u][e] if s == 3 else int(rng.integers(0, 12))
                rows.append((u, item, "view", s * 7200 + e))
    return rows


@pytest.mark.parametrize("kind", ["cooccurrence", "user_item"])
def test_collaborative_vectors_ignore_validation_and_test_events(kind):
    rng = np.random.default_rng(0)
    base = _log(np.random.default_rng(0), [[0, 1, 2]] * 30)
    changed = _log(np.random.default_rng(0), [[int(x) for x in rng.integers(0, 12, 3)] for _ in range(30)])
    a, b = _primary(base), _primary(changed)
    assert a.items["item_id"].to_list() == b.items["item_id"].to_list()
    params = _cf(cf=kind, cf_window=3, cf_chunk_events=7)
    va, vb = (cf_embeddings(p.sequences, p.items.height, 8, 1, params) for p in (a, b))
    assert va.shape == (12, 8)
    np.testing.assert_allclose(np.abs(va), np.abs(vb), atol=1e-6)  # SVD factors are defined up to sign
    norms = np.linalg.norm(va, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_ppmi_counts_pairs_within_the_window_of_the_same_user_only():
    users = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([0, 1, 1, 2, 3, 0])
    one = ppmi_matrix(users, items, 4, window=1, chunk_events=100, dtype=np.float64).toarray()
    # pairs at gap 1: (0,1), (1,2) for user 0 (1 next to 1 is no evidence), (3,0) for user 1; never (2,3) across users
    assert set(zip(*np.nonzero(one))) <= {(0, 1), (1, 0), (1, 2), (2, 1), (3, 0), (0, 3)}
    assert one[2, 3] == 0 and one[3, 2] == 0 and one[0, 2] == 0
    assert np.array_equal(one > 0, (one > 0).T)  # both directions (values differ: context smoothing)
    two = ppmi_matrix(users, items, 4, window=2, chunk_events=100, dtype=np.float64).toarray()
    assert (np.count_nonzero(two[0, 1:3]) >= 1) and two[2, 3] == 0  # gap 2 reaches (0, 1) again, still not users


def test_cooccurrence_vectors_put_items_browsed_together_close():
    rng = np.random.default_rng(3)
    rows = []
    for u in range(40):  # half the users browse items 0-5, half 6-11, in random order
        group = np.arange(6) + 6 * (u % 2)
        for t, item in enumerate(rng.choice(group, 12)):
            rows.append((u, int(item), "view", t * 60))
    primary = _primary(rows)
    ids = primary.items["item_id"].cast(pl.Int64).to_numpy()
    vectors = cf_embeddings(primary.sequences, primary.items.height, 4, 0, _cf(cf_window=2, cf_chunk_events=1000))
    similarity = vectors @ vectors.T
    same = (ids[:, None] < 6) == (ids[None, :] < 6)
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.5


def test_text_embeddings_with_the_shipped_encoder_and_cf_fallback_for_empty_text():
    rows = [(u, i, "view", t) for u in range(6) for t, i in enumerate([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])]
    primary = _primary(rows)
    items = primary.items.with_columns(
        pl.Series("title", ["a red apple", "a green apple", "quantum field theory lecture notes", None]))
    params = validate(EmbedParams, base_parameters()["embed"] | {"cf_dim": 4}, prefix="embed.")
    vectors, info = embed_items(items, primary.sequences, params, seed=0)
    assert vectors.shape == (4, 384) and info["encoder"] == "all-MiniLM-L6-v2"
    assert info["n_text"] == 3 and info["n_cf"] == 1
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-4)
    apples, physics = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert apples > physics + 0.2
    assert not np.allclose(vectors[3], 0) and np.count_nonzero(vectors[3][8:]) == 0  # CF row, padded


def _two_group_log(seed=3, users=40, per_user=12):
    """Half the users browse items 0-5, half 6-11, in random order, one session a day."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        group = np.arange(6) + 6 * (u % 2)
        for t, item in enumerate(rng.choice(group, per_user)):
            rows.append((u, int(item), "view", (t // 3) * 86400 + t))
    return _primary(rows)


def test_probe_prefers_vectors_that_know_the_groups():
    primary = _two_group_log()
    ids = primary.items["item_id"].cast(pl.Int64).to_numpy()
    grouped = np.stack([(ids < 6).astype(np.float32), (ids >= 6).astype(np.float32)], axis=1)  # the true groups
    mixed = np.stack([(ids % 2 == 0), (ids % 2 == 1)], axis=1).astype(np.float32)  # groups that mix both worlds
    good, bad = probe_ndcg(grouped, primary.sequences), probe_ndcg(mixed, primary.sequences)
    assert good > 0.8 and bad < good - 0.3


def test_auto_keeps_the_text_vectors_only_when_the_probe_prefers_them(monkeypatch):
    primary = _two_group_log()
    ids = primary.items["item_id"].cast(pl.Int64).to_numpy()
    items = primary.items.with_columns(pl.Series("title", [f"item {i}" for i in ids]))
    grouped = np.stack([(ids < 6), (ids >= 6)], axis=1).astype(np.float32)
    params = validate(EmbedParams, base_parameters()["embed"] | {"cf_dim": 2}, prefix="embed.")
    monkeypatch.setattr("seqrec_pipeline.data.embeddings.encode_texts", lambda texts, *a: grouped)  # informative text
    vectors, info = embed_items(items, primary.sequences, params, seed=0)
    assert info["source"] == "text" and np.array_equal(vectors, grouped)
    assert info["probe_ndcg@10"]["text"] >= info["probe_ndcg@10"]["cf"]
    noise = np.random.default_rng(0).standard_normal(grouped.shape).astype(np.float32)
    monkeypatch.setattr("seqrec_pipeline.data.embeddings.encode_texts", lambda texts, *a: noise)  # useless text
    vectors, info = embed_items(items, primary.sequences, params, seed=0)
    assert info["source"] == "cf" and info["probe_ndcg@10"]["cf"] > info["probe_ndcg@10"]["text"]
    only_text = validate(EmbedParams, base_parameters()["embed"] | {"source": "text"}, prefix="embed.")
    assert embed_items(items, primary.sequences, only_text, seed=0)[1]["source"] == "text"  # no choice asked


def _ppmi_in_one_pass(users, items, n_items, window, smoothing=0.75):
    """The unchunked PPMI in float64, written out directly: the reference for the chunked build."""
    rows, cols = [], []
    for gap in range(1, window + 1):
        pair = (users[gap:] == users[:-gap]) & (items[gap:] != items[:-gap])
        rows += [items[:-gap][pair], items[gap:][pair]]
        cols += [items[gap:][pair], items[:-gap][pair]]
    row, col = np.concatenate(rows), np.concatenate(cols)
    counts = sp.coo_matrix((np.ones(len(row)), (row, col)),
                                                          shape=(n_items, n_items)).tocsr().tocoo()
    item_total = np.bincount(counts.row, weights=counts.data, minlength=n_items)
    context = np.bincount(counts.col, weights=counts.data, minlength=n_items) ** smoothing
    pmi = np.log(counts.data * context.sum() / (item_total[counts.row] * context[counts.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])),
                                                        shape=(n_items, n_items))


@pytest.mark.parametrize("chunk_events", [1, 5, 37, 10_000])
def test_chunked_ppmi_equals_the_one_pass_build_exactly(chunk_events):
    rng = np.random.default_rng(11)
    rows = [(u, int(rng.integers(0, 25)), "view", t * 60) for u in range(60) for t in range(int(rng.integers(2, 30)))]
    primary = _primary(rows)
    users, items = _training_events(primary.sequences)
    assert users.dtype == np.int32 and items.dtype == np.int32
    assert np.all(np.diff(users) >= 0) and len(np.unique(users)) > 40
    expected = _ppmi_in_one_pass(users.astype(np.int64), items.astype(np.int64), primary.items.height, 3)
    got = ppmi_matrix(users, items, primary.items.height, 3, chunk_events, np.float64)
    expected.sort_indices()
    got.sort_indices()
    assert got.nnz == expected.nnz > 100
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)  # bit-identical, not merely close
    vectors = [cf_embeddings(primary.sequences, primary.items.height, 6, 0, _cf(cf_window=3, cf_chunk_events=c))
               for c in (3, 10**6)]
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_in_past_on_a_subset_equals_the_full_check():
    from seqrec_pipeline.splits import eval_set

    primary = _two_group_log()
    data = eval_set(primary.sequences, "last_session", "valid", 3)
    rng = np.random.default_rng(2)
    rows = np.sort(rng.choice(data.n_samples, data.n_samples // 2, replace=False))
    items = rng.integers(-1, primary.items.height, (len(rows), 7))
    full = np.full((data.n_samples, 7), -1, dtype=np.int64)
    full[rows] = items
    expected = data.in_past(full)[rows]
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(_in_past(data, rows, items), expected)


def _gapped_matrix(seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """A sparse 300 x 200 matrix whose 8 leading singular values (40 .. 12) stand far above the rest (< 1.5)."""
    rng = np.random.default_rng(seed)
    left = np.linalg.qr(rng.standard_normal((300, 8)))[0]
    right = np.linalg.qr(rng.standard_normal((200, 8)))[0]
    low_rank = (left * np.linspace(40, 12, 8)) @ right.T
    noise = sp.random(300, 200, density=0.05, random_state=seed, data_rvs=lambda n: rng.uniform(-0.3, 0.3, n))
    matrix = sp.csr_matrix(np.where(np.abs(low_rank) > 0.05, low_rank, 0.0)) + noise  # sparse, not exactly rank 8
    return matrix.tocsr(), np.sort(sp.linalg.svds(matrix, k=8)[1])[::-1]


def test_randomized_svd_finds_the_leading_singular_values_and_vectors_of_arpack():
    matrix, expected = _gapped_matrix(0)
    u, s, vt = randomized_svd(matrix, 8, oversample=8, power_iters=2, seed=0)
    assert u.dtype == s.dtype == vt.dtype == np.float32
    assert u.shape == (300, 8) and vt.shape == (8, 200)
    assert expected[-1] > 5 * np.linalg.svd(matrix.toarray(), compute_uv=False)[8]  # the gap is there
    np.testing.assert_allclose(s, expected, rtol=1e-4)
    assert np.all(np.diff(s) < 0)
    np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-5)
    # the same subspace as the exact SVD: the cosines of the principal angles are all ~1
    exact_u, _, exact_vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
    np.testing.assert_allclose(np.linalg.svd(exact_u[:, :8].T @ u, compute_uv=False), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.svd(exact_vt[:8] @ vt.T, compute_uv=False), 1.0, atol=1e-4)
    np.testing.assert_allclose((u * s) @ vt, (exact_u[:, :8] * expected) @ exact_vt[:8], atol=1e-3)


def test_randomized_svd_without_power_iterations_is_less_accurate():
    # a flat spectrum past the gap is where the power iterations matter; none gives a visibly worse estimate
    matrix, expected = _gapped_matrix(1)
    plain = randomized_svd(matrix, 8, oversample=0, power_iters=0, seed=0)[1]
    iterated = randomized_svd(matrix, 8, oversample=0, power_iters=3, seed=0)[1]
    assert np.abs(iterated - expected).max() < np.abs(plain - expected).max() / 10


def test_randomized_svd_is_seeded():
    matrix, _ = _gapped_matrix(2)
    first, second = (randomized_svd(matrix, 8, 4, 2, seed=5) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = randomized_svd(matrix, 8, 4, 2, seed=6)
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_allclose(first[1], other[1], rtol=1e-4)  # another start, the same answer


def test_cf_solver_is_chosen_by_the_item_threshold_and_unknown_solvers_are_refused():
    auto = _cf(cf_arpack_max_items=100)
    assert cf_solver(auto, 100) == "arpack" and cf_solver(auto, 101) == "randomized"
    assert cf_solver(_cf(cf_solver="arpack", cf_arpack_max_items=0), 10) == "arpack"
    assert cf_solver(_cf(cf_solver="randomized"), 10) == "randomized"
    with pytest.raises(InputError, match="embed.cf_solver"):
        _cf(cf_solver="lanczos")
    with pytest.raises(InputError, match="cf_oversampling"):
        _cf(cf_oversampling=4)


@pytest.mark.parametrize("kind", ["cooccurrence", "user_item"])
def test_auto_solver_runs_arpack_below_the_threshold_and_randomized_above(kind):
    primary = _two_group_log()
    n_items = primary.items.height
    by = {solver: cf_embeddings(primary.sequences, n_items, 4, 0, _cf(cf=kind, cf_solver=solver))
          for solver in ("arpack", "randomized")}
    below = cf_embeddings(primary.sequences, n_items, 4, 0, _cf(cf=kind, cf_arpack_max_items=n_items))
    above = cf_embeddings(primary.sequences, n_items, 4, 0, _cf(cf=kind, cf_arpack_max_items=n_items - 1))
    np.testing.assert_array_equal(below, by["arpack"])
    np.testing.assert_array_equal(above, by["randomized"])
    assert not np.array_equal(by["arpack"], by["randomized"])
    # both are unit vectors spanning (nearly) the same space: the Gram matrices agree
    np.testing.assert_allclose(by["randomized"] @ by["randomized"].T, by["arpack"] @ by["arpack"].T, atol=0.05)


def test_probe_reads_the_log_in_user_slices_with_the_same_value():
    primary = _two_group_log(users=60)
    vectors = np.random.default_rng(5).normal(size=(primary.items.height, 4)).astype(np.float32)
    whole = probe_ndcg(vectors, primary.sequences, seed=1)
    sampled = probe_ndcg(vectors, primary.sequences, seed=1, max_users=9)
    assert whole > 0 and sampled != whole
    for slice_events in (1, 13, 10**6):
        assert probe_ndcg(vectors, primary.sequences, seed=1, slice_events=slice_events) == whole
        assert probe_ndcg(vectors, primary.sequences.lazy(), seed=1, slice_events=slice_events) == whole
        assert probe_ndcg(vectors, primary.sequences, seed=1, max_users=9, slice_events=slice_events) == sampled


def test_the_lazy_view_of_a_stored_table_gives_the_same_vectors_and_probe(tmp_path, monkeypatch):
    """The embed node gets ``sequences@lazy`` (a scan of the Parquet file): the same vectors, choice and probe
    values as from the table in memory, and the collaborative vectors read only the item lists, lengths and
    split points (a scan without the other columns gives them too)."""
    from seqrec_pipeline.io.parquet import PolarsParquetDataset

    primary = _two_group_log(users=60)
    path = tmp_path / "sequences.parquet"
    PolarsParquetDataset(str(path)).save(primary.sequences)
    lazy = PolarsParquetDataset(str(path), lazy=True).load()
    assert isinstance(lazy, pl.LazyFrame)
    n_items = primary.items.height
    for kind in ("cooccurrence", "user_item"):
        eager = cf_embeddings(primary.sequences, n_items, 4, 0, _cf(cf=kind))
        np.testing.assert_array_equal(cf_embeddings(lazy, n_items, 4, 0, _cf(cf=kind)), eager)
        narrow = pl.scan_parquet(path).drop("user_idx", "behavior", "timestamp", "session", "n_sessions",
                                            "last_event_test", "last_session_test")
        np.testing.assert_array_equal(cf_embeddings(narrow, n_items, 4, 0, _cf(cf=kind)), eager)
    ids = primary.items["item_id"].cast(pl.Int64).to_numpy()
    items = primary.items.with_columns(pl.Series("title", [f"item {i}" for i in ids]))
    noise = np.random.default_rng(0).standard_normal((n_items, 2)).astype(np.float32)
    monkeypatch.setattr("seqrec_pipeline.data.embeddings.encode_texts", lambda texts, *a: noise.copy())
    params = validate(EmbedParams, base_parameters()["embed"] | {"cf_dim": 2}, prefix="embed.")
    vectors, info = embed_items(items, primary.sequences, params, seed=0)
    lazy_vectors, lazy_info = embed_items(items, lazy, params, seed=0)
    assert set(info["probe_ndcg@10"]) == {"text", "cf"} and lazy_info == info
    np.testing.assert_array_equal(lazy_vectors, vectors)


@pytest.mark.parametrize("row_blocks", [1, 3, 8, 100])
def test_pair_counts_in_row_blocks_stack_to_the_one_pass_counts(row_blocks):
    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(50, dtype=np.int32), rng.integers(2, 40, 50))
    items = (rng.zipf(1.5, len(users)) % 30).astype(np.int32)  # skewed: the blocks need not be equally wide
    bounds, blocks = _pair_counts(users, items, 30, 2, chunk_events=17, row_blocks=row_blocks)
    assert bounds[0] == 0 and bounds[-1] == 30 and np.all(np.diff(bounds) > 0)
    assert len(blocks) == len(bounds) - 1 <= row_blocks and (len(blocks) > 1) == (row_blocks > 1)
    assert [block.shape for block in blocks] == [(hi - lo, 30) for lo, hi in zip(bounds[:-1], bounds[1:])]
    expected = np.zeros((30, 30), np.int64)
    for gap in (1, 2):
        pair = (users[gap:] == users[:-gap]) & (items[gap:] != items[:-gap])
        np.add.at(expected, (items[:-gap][pair], items[gap:][pair]), 1)
    expected += expected.T
    got = sp.vstack(blocks).toarray()
    assert got.dtype == np.int32 and expected.sum() > 500
    np.testing.assert_array_equal(got, expected)
