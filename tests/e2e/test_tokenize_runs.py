"""`kedro run` of embed + tokenize on a real slice: collaborative vectors, two tokenizers side by side."""

import json

import numpy as np
import polars as pl

from seqrec_pipeline.models.tokenizers import is_bijection
from seqrec_pipeline.vocab import TokenVocab


def _ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_tokenize_pipeline_writes_one_table_per_tokenizer(project):
    _ok(project.run("run", "--pipeline=tokenize", "--params=dataset=retail_ci"))
    # only the tokenization nodes, on the stored embeddings, with another method
    _ok(project.run("run", "--pipeline=tokenize", "--namespaces=tokenize", "--params=dataset=retail_ci,tokenizer=cid"))

    info = json.loads((project.path / "data/04_feature/retail_ci/embedding_info.json").read_text())
    assert info["source"] == "cf" and info["n_cf"] == info["n_items"]
    items = pl.read_parquet(project.latest("data/03_primary/retail_ci/items.parquet"))
    emb = np.load(project.latest("data/04_feature/retail_ci/item_embeddings.npy"))
    assert emb.shape == (items.height, 64) and np.isfinite(emb).all()

    for method, levels in (("rqkmeans", 3), ("cid", 2)):
        table = pl.read_parquet(project.latest(f"data/05_model_input/retail_ci/{method}/sid_table.parquet"))
        assert table["item_idx"].to_list() == list(range(items.height))
        codes = table.drop("item_idx").to_numpy()
        assert is_bijection(codes) and codes.shape[1] >= levels
        vocab = TokenVocab.from_dict(
            json.loads((project.path / f"data/05_model_input/retail_ci/{method}/sid_vocab.json").read_text()))
        assert vocab.behaviors == ("view", "cart", "buy") and vocab.use_behavior_token
        assert len(vocab.level_sizes) == codes.shape[1] and (codes < np.array(vocab.level_sizes)).all()
        stats = json.loads((project.path / f"data/05_model_input/retail_ci/{method}/sid_stats.json").read_text())
        assert stats["method"] == method and stats["n_items"] == items.height
    # cid digits are the item index in base 64, least significant first
    cid = pl.read_parquet(project.latest("data/05_model_input/retail_ci/cid/sid_table.parquet"))
    assert cid.row(70)[1:3] == (70 % 64, 70 // 64)

    runs = project.mlflow("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                          "where e.name = 'retail_ci' order by r.start_time")
    assert len(runs) == 2
    metrics = dict(project.mlflow("select key, value from metrics where run_uuid = ?", runs[0][0]))
    assert 0 < metrics["sid/unique_ratio"] <= 1 and metrics["embed/n_cf"] == items.height
    stats = json.loads((project.path / "data/05_model_input/retail_ci/rqkmeans/sid_stats.json").read_text())
    tags = dict(project.mlflow("select key, value from tags where run_uuid = ?", runs[0][0]))
    assert tags["sid/precision"] == stats["precision"] in ("bf16", "fp32")  # what "auto" resolved to


def test_bad_tokenizer_parameters_stop_with_one_line(project):
    for override, message in (
        ("tokenizers.rqkmeans.niter=12", "unknown parameter 'tokenizers.rqkmeans.niter'"),
        ("tokenizers.rqkmeans.precision=fp16",
         "'tokenizers.rqkmeans.precision': Input should be 'auto', 'bf16' or 'fp32' (got 'fp16')"),
    ):
        bad = project.run("run", "--pipeline=tokenize", f"--params=dataset=retail_ci,{override}")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-3000:]
        assert "Traceback" not in bad.stdout + bad.stderr
