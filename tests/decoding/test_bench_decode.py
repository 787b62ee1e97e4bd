"""The decoding benchmark runs end to end on tiny settings and reports the documented keys."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_benchmark


@pytest.fixture
def bench_decode():
    return load_benchmark("bench_decode")


def test_random_codes_are_a_bijection(bench_decode):
    codes = bench_decode.random_bijective_codes(500, (4, 4, 4, 16), seed=1)
    assert codes.shape == (500, 4) and len({tuple(row) for row in codes.tolist()}) == 500
    assert (codes.max(axis=0) < [4, 4, 4, 16]).all() and codes.min() >= 0


def test_benchmark_matches_generate_and_writes_a_ratio(bench_decode, tmp_path):
    out = tmp_path / "nested" / "decode.json"
    bench_decode.main([
        "--out", str(out), "--users", "3", "--history", "3", "--items", "200", "--levels", "3", "--codebook", "8",
        "--behaviors", "1", "3", "--beam", "5", "--topk", "3", "--batch-size", "2", "--repeats", "1",
    ])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["ratio"] > 0 and report["ours"]["median_s"] > 0 and report["baseline"]["median_s"] > 0
    assert report["setting"]["queries"] == 6 and report["setting"]["prompt_tokens"] == 3 * 4 + 1
    assert "random init" in report["model_init"]
    # Same model, same scoring: the reference's generate + trie callback finds the same lists.
    assert report["top3_identical_share"] == 1.0 and report["top5_identical_share"] == 1.0
    assert report["top3_max_abs_score_diff_same_item"] < 1e-4


def test_benchmark_runs_gamer_without_a_baseline(bench_decode, tmp_path):
    out = tmp_path / "decode.json"
    bench_decode.main([
        "--out", str(out), "--model", "gamer", "--users", "2", "--history", "2", "--items", "100", "--levels", "2",
        "--codebook", "16", "--beam", "4", "--topk", "2", "--repeats", "1",
    ])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["model"] == "gamer" and report["ratio"] is None and report["baseline"] is None
    assert "gamer" in report["baseline_skipped"]
