"""The training benchmark runs end to end on tiny settings and reports the documented keys."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_benchmark


@pytest.fixture
def bench_train():
    return load_benchmark("bench_train")


def test_benchmark_writes_ratios(bench_train, tmp_path):
    out = tmp_path / "nested" / "train.json"
    bench_train.main([
        "--out", str(out), "--preset", "cpu-small", "--batch-size", "2", "--train-items", "3",
        "--expert-batch-size", "2", "--expert-items", "4", "--warmup", "1", "--repeats", "1", "--threads", "1",
    ])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["gamer_vs_qwen3_ratio"] > 0 and report["batched_experts_speedup"] > 0
    assert report["gamer_vs_qwen3_ratio_uniform_behaviors"] > 0
    assert report["gamer_vs_qwen3_ratio_behavior_mix"] == "taobao"
    assert set(report["train_step"]) == {"taobao", "uniform"}
    for train in report["train_step"].values():
        assert train["sequence_length"] == 15  # 3 items x (behavior token + 4 codes)
        for name in ("gamer", "qwen3"):
            assert train[name]["samples_per_s"] > 0 and train[name]["tokens_per_s"] > 0
        # gamer does strictly more arithmetic per token than the plain decoder of the same size
        assert 0 < train["qwen3_vs_gamer_flop_ratio"] < 1
    assert report["train_step"]["uniform"]["behavior_mix"] == {"click": 0.25, "cart": 0.25, "fav": 0.25, "buy": 0.25}
    assert report["experts"]["max_abs_diff_vs_loop"] < 1e-5
