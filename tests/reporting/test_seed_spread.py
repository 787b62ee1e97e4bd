"""The seed-spread benchmark: newest predictions per run, per-seed and seed-averaged paired differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def spread():
    return load_benchmark("seed_spread")


def _write(project: Path, run: str, version: str, items: list[list[int]], users=(0, 1)) -> None:
    folder = project / "data" / "07_model_output" / "toy" / run / "predictions.parquet" / version
    folder.mkdir(parents=True)
    pl.DataFrame({"user_idx": list(users), "behavior_idx": [0] * len(users), "items": items,
                  "targets": [[5], [6]][: len(users)]}).write_parquet(folder / "predictions.parquet")


def test_the_newest_version_of_each_run_is_read_per_sample(spread, tmp_path):
    _write(tmp_path, "a", "2026-01-01T00.00.00.000Z", [[1, 2], [3, 4]])  # older: no hits
    _write(tmp_path, "a", "2026-02-01T00.00.00.000Z", [[5, 2], [3, 6]])  # newest: hit at 1 and at 2
    _write(tmp_path, "b", "2026-01-01T00.00.00.000Z", [[2, 5], [1, 2]])
    samples, (a, b) = spread.run_ndcg(tmp_path, "toy", ["a", "b"], k=10)
    assert samples["user_idx"].to_list() == [0, 1]
    np.testing.assert_allclose(a, [1.0, 1 / np.log2(3)])
    np.testing.assert_allclose(b, [1 / np.log2(3), 0.0])


def test_runs_over_different_samples_are_refused(spread, tmp_path):
    _write(tmp_path, "a", "v1", [[5], [6]])
    _write(tmp_path, "b", "v1", [[5]], users=(0,))
    with pytest.raises(SystemExit, match="different samples"):
        spread.run_ndcg(tmp_path, "toy", ["a", "b"], k=10)
    with pytest.raises(SystemExit, match="no predictions"):
        spread.run_ndcg(tmp_path, "toy", ["a", "missing"], k=10)


def test_rows_per_seed_mean_and_seed_averaged_samples(spread):
    per_seed = [(np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0])),   # 0.50 vs 0.25
                (np.array([0.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 1.0]))]   # 0.25 vs 0.50
    rows = spread.spread_rows(["s1", "s2"], per_seed)
    assert rows[0][:3] == ["s1", "0.5000", "0.2500"] and rows[0][3].startswith("+0.2500 ± ")
    assert rows[1][:3] == ["s2", "0.2500", "0.5000"] and rows[1][3].startswith("-0.2500 ± ")
    sd = np.std([0.5, 0.25], ddof=1)  # both runs: the same spread over the two seeds
    assert rows[2] == ["mean over 2 seeds", f"0.3750 (sd {sd:.4f})", f"0.3750 (sd {sd:.4f})",
                       "+0.0000; first ahead in 1 of 2"]
    # seed-averaged samples: a = [.5, 0, .5, .5], b = [0, .5, 0, 1] -> d = [.5, -.5, .5, -.5]
    half = 1.959964 * np.std([0.5, -0.5, 0.5, -0.5], ddof=1) / 2
    assert rows[3] == ["seed-averaged per sample", "0.3750", "0.3750", f"+0.0000 ± {half:.4f}"]
