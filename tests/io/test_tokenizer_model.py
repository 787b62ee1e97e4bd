"""The fitted tokenizer is stored as JSON + .npy (RQ-VAE: its config + a plain state_dict): it loads back
equal, and a pickle slipped into the folder is refused without running it."""

import json

import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError, Version

from seqrec_pipeline.io.tokenizer_model import TokenizerModelDataset
from seqrec_pipeline.models.tokenizers import RQVAE, RQVAEConfig
from seqrec_pipeline.models.tokenizers.build import build_sid
from seqrec_pipeline.params import CIDParams, RIDParams, RQKMeansParams

EMB = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
ITEMS = [str(i) for i in range(40)]


def _dataset(tmp_path, version="2026-01-01T00.00.00.000Z"):
    return TokenizerModelDataset(filepath=str(tmp_path / "tokenizer-x"), version=Version(None, version))


@pytest.mark.parametrize("method", ["rqkmeans", "cid", "rid"])
def test_method_models_round_trip(tmp_path, method):
    params = {"rqkmeans": RQKMeansParams(levels=2, codebook_size=4, sample_iters=2, sample_points_per_centroid=8,
                                         full_iters=2, precision="fp32", refine_iters=0, balance_last_level=False,
                                         n_threads=1),
              "cid": CIDParams(base=8, shuffle=False), "rid": RIDParams(level_sizes=[8, 8])}
    model = build_sid(method, EMB, ITEMS, params[method], seed=0).model
    dataset = _dataset(tmp_path)
    dataset.save(model)
    loaded = dataset.load()
    assert loaded.keys() == model.keys() and loaded["method"] == method
    for key, value in model.items():
        if key == "centroids":
            assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded[key], value))
        else:
            assert loaded[key] == (list(value) if isinstance(value, tuple) else value)
    assert not list((tmp_path / "tokenizer-x").rglob("*.pkl"))


def test_rqvae_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=6, hidden_dims=(8,), e_dim=4, codebook_sizes=(4, 4))).eval()
    dataset = _dataset(tmp_path)
    dataset.save(model)
    loaded = dataset.load()
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.encode(EMB), model.encode(EMB))


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))  # unpickling would create the marker file


def test_a_pickle_in_the_folder_is_refused_and_never_run(tmp_path):
    dataset = _dataset(tmp_path)
    dataset.save({"method": "rqkmeans", "centroids": [np.zeros((2, 3), dtype=np.float32)]})
    version_dir = next((tmp_path / "tokenizer-x").iterdir()) / "tokenizer-x"
    manifest = json.loads((version_dir / "tokenizer.json").read_text())
    npy = version_dir / manifest["model"]["dict"]["centroids"][0]["npy"]
    marker = tmp_path / "marker"
    np.save(npy, np.array([_Marker(marker)], dtype=object), allow_pickle=True)  # an object array is a pickle
    with pytest.raises(DatasetError, match="allow_pickle=False"):
        dataset.load()
    assert not marker.exists()
    with pytest.raises(DatasetError, match="without pickle"):
        _dataset(tmp_path, "2026-01-02T00.00.00.000Z").save({"ids": np.array([object()], dtype=object)})
