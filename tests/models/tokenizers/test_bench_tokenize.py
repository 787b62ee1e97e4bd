"""The tokenizer benchmark runs end to end on tiny settings and reports the documented keys."""

from __future__ import annotations

import json

from tests.helpers import load_benchmark


def test_benchmark_writes_ratio_and_seed_check(tmp_path):
    bench = load_benchmark("bench_tokenize")
    out = tmp_path / "tokenize.json"
    bench.main(["--n", "700", "--dim", "8", "--rqvae-epochs", "0", "--check-seeds", "3",
                "--scientific-emb", str(tmp_path / "absent.npy"), "--out", str(out)])
    report = json.loads(out.read_text())
    random = report["datasets"]["random"]
    assert report["datasets"]["scientific"] is None and report["rqvae"] is None
    assert report["ratio"] == random["baseline"]["seconds"] / random["ours"]["seconds"]
    assert random["ours"]["unique_ratio"] <= 1.0 and random["ours"]["reconstruction_mse"] > 0
    (check,) = random["seed_check"]
    assert check["seed"] == 3
    for name in ("ours", "fp32"):
        assert check[f"{name}_ratio"] == check["baseline_seconds"] / check[f"{name}_seconds"]
        assert check[f"{name}_error_le_baseline"] == (check[f"{name}_mse"] <= check["baseline_mse"])
    assert check["ours_mse"] != random["ours"]["reconstruction_mse"]  # other data, other draws
    for name in ("fp32", "previous_settings"):
        assert random[f"ratio_{name}"] == random["baseline"]["seconds"] / random[f"ours_{name}"]["seconds"]
    assert random["ours_fp32"]["precision_used"] == "fp32"
    assert random["ours"]["precision_used"] in ("bf16", "fp32")
