import warnings

import numpy as np
import pytest
import torch

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers import (
    RQVAEConfig,
    is_bijection,
    load_rqvae,
    resolve_collisions,
    save_rqvae,
    train_rqvae,
)
from seqrec_pipeline.models.tokenizers.rqvae import sinkhorn_codes

SMALL = dict(hidden_dims=(64,), e_dim=8, codebook_sizes=(32, 32), epochs=12, batch_size=128, eval_every=5, lr=3e-3)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, 32))
    x = centers[rng.integers(0, 12, 600)] + 0.3 * rng.normal(size=(600, 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def trained(data):
    calls = []
    result = train_rqvae(data, RQVAEConfig(**SMALL), seed=0, progress=False, on_epoch=lambda e, m: calls.append((e, m)))
    return result, calls


def test_trains_and_reports(trained):
    result, calls = trained
    assert [e for e, _ in calls] == list(range(12))
    losses = [m["loss"] for _, m in calls]
    assert losses[-1] < 0.7 * losses[0]
    eval_epochs = [e for e, m in calls if "collision_rate" in m]
    assert eval_epochs == [0, 4, 9, 11]  # epoch 0, every 5th, and the last
    for e, m in calls:
        assert {"loss", "recon_loss", "quant_loss"} <= set(m)
        assert ("restarted_codes" in m) == (e < 11)
        assert all(isinstance(v, float) for v in m.values())
        if "collision_rate" in m:
            assert 0.0 <= m["collision_rate"] < 1.0
            assert 0.0 < m["usage_level_0"] <= 1.0 and 0.0 < m["usage_level_1"] <= 1.0
    best = min((m["collision_rate"], m["recon_loss"]) for _, m in calls if "collision_rate" in m)
    assert result.best_collision_rate == best[0]
    assert calls[result.best_epoch][1]["collision_rate"] == best[0]
    assert [h["epoch"] for h in result.history] == list(range(12))


def test_best_state_is_returned_and_encodes(trained, data):
    result, _ = trained
    codes = result.model.encode(data)
    assert codes.shape == (600, 2) and codes.dtype == np.int64
    assert codes.min() >= 0 and (codes.max(0) < 32).all()
    # the returned model is the best evaluated state: its collision rate is the best one
    assert 1 - len(np.unique(codes, axis=0)) / len(codes) == pytest.approx(result.best_collision_rate)
    table, _ = resolve_collisions(codes, [32, 32])
    assert is_bijection(table)


def test_deterministic_and_leaves_global_rng(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cfg = dict(SMALL, epochs=2)
    a = train_rqvae(data, cfg, seed=5, progress=False)
    assert torch.equal(torch.rand(3), expected)  # caller's RNG stream untouched
    b = train_rqvae(data, cfg, seed=5, progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.model.encode(data).tobytes() == b.model.encode(data).tobytes()
    c = train_rqvae(data, cfg, seed=6, progress=False)
    assert not torch.equal(sa["encoder.0.weight"], c.model.state_dict()["encoder.0.weight"])


def test_save_load_roundtrip(trained, data, tmp_path):
    model = trained[0].model
    save_rqvae(model, tmp_path / "rqvae")
    loaded = load_rqvae(tmp_path / "rqvae")
    assert loaded.config == model.config and loaded.config.in_dim == 32
    np.testing.assert_array_equal(loaded.encode(data), model.encode(data))
    with pytest.raises(InputError, match="not an RQ-VAE checkpoint"):
        load_rqvae(tmp_path / "missing")


def test_sinkhorn_spreads_a_collapsed_batch():
    gen = torch.Generator().manual_seed(0)
    dist = torch.rand(64, 8, generator=gen)
    dist[:, 0] -= 1.0  # every item is nearest to code 0
    assert dist.argmin(1).unique().tolist() == [0]
    codes = sinkhorn_codes(dist, epsilon=0.05, n_iters=50)
    counts = torch.bincount(codes, minlength=8)
    assert (counts > 0).all() and counts.max() <= 16  # near the balanced 8 per code


def test_config_and_input_errors(data):
    with pytest.raises(InputError, match="unknown RQ-VAE config keys"):
        RQVAEConfig.from_dict({"epochz": 3})
    assert RQVAEConfig.from_dict(RQVAEConfig().to_dict()) == RQVAEConfig()
    paper = RQVAEConfig.paper()
    assert paper.hidden_dims == (2048, 1024, 512, 256, 128, 64) and paper.codebook_sizes == (256,) * 4
    bad = data.copy()
    bad[5] = np.nan
    with pytest.raises(InputError, match=r"\[5\]"):
        train_rqvae(bad, SMALL, progress=False)


def test_codebook_larger_than_items(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_rqvae(data[:10], dict(SMALL, epochs=2), progress=False)
    codes = result.model.encode(data[:10])
    assert codes.shape == (10, 2) and (codes < 32).all()
