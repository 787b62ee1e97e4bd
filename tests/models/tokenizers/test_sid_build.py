import json

import numpy as np
import pytest

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers import is_bijection
from seqrec_pipeline.models.tokenizers.build import METHODS, PARAMS, build_sid
from seqrec_pipeline.params import validate
from tests.conftest import base_parameters


def _params(method, **values):
    """The configured ``tokenizers.<method>`` parameters with ``values`` replaced, as build_sid takes them."""
    return validate(PARAMS[method], base_parameters()["tokenizers"][method] | values, prefix=f"tokenizers.{method}.")


@pytest.fixture
def emb():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "given"])
def test_every_method_gives_a_bijection_within_its_codebooks(method, emb):
    params = {"rqkmeans": _params("rqkmeans", levels=2, codebook_size=8), "rqvae": {"codebook_sizes": [8, 8],
              "epochs": 3, "hidden_dims": [16], "e_dim": 8, "batch_size": 64}, "cid": _params("cid", base=8),
              "rid": _params("rid", level_sizes=[8, 8, 8])}
    sid = build_sid(method, emb, [str(i) for i in range(300)], params[method], seed=3)
    assert sid.codes.shape[0] == 300 and is_bijection(sid.codes)
    assert (sid.codes < np.array(sid.level_sizes)).all()
    assert sid.stats["method"] == method and 0 < sid.stats["unique_ratio"] <= 1
    again = build_sid(method, emb, [str(i) for i in range(300)], params[method], seed=3)
    assert np.array_equal(sid.codes, again.codes)  # reproducible bit for bit


def test_rqkmeans_collisions_get_a_disambiguation_level(emb):
    sid = build_sid("rqkmeans", emb, [str(i) for i in range(300)], _params("rqkmeans", levels=1, codebook_size=4),
                    seed=0)
    assert sid.codes.shape[1] == 2 and sid.stats["added_level"]
    assert sid.level_sizes[-1] == sid.stats["max_group_size"] > 1


def test_rqkmeans_parameters_reach_the_method_and_unknown_ones_stop(emb):
    ids = [str(i) for i in range(300)]
    sid = build_sid("rqkmeans", emb, ids, _params("rqkmeans", levels=2, codebook_size=8, precision="fp32",
                                                  refine_iters=0), seed=0)
    assert sid.stats["precision"] == "fp32" and len(sid.stats["level_mse"]) == 2
    with pytest.raises(InputError, match=r"unknown parameter 'tokenizers.rqkmeans.niter'"):
        _params("rqkmeans", niter=12)
    with pytest.raises(InputError, match=r"'tokenizers.rqkmeans.precision': Input should be 'auto', 'bf16' or "
                                         r"'fp32' \(got 'fp16'\)"):
        _params("rqkmeans", precision="fp16")
    with pytest.raises(TypeError, match="takes RQKMeansParams, not dict"):
        build_sid("rqkmeans", emb, ids, {"levels": 2}, seed=0)


def test_given_index_file(tmp_path):
    path = tmp_path / "D.index.json"
    path.write_text(json.dumps({"7": ["<a_1>", "<b_2>"], "9": ["<a_1>", "<b_2>"], "5": ["<a_0>", "<b_3>"]}))
    sid = build_sid("given", None, ["5", "7", "9"], _params("given"), seed=0, index_file=path)
    assert sid.codes.tolist() == [[0, 3, 0], [1, 2, 0], [1, 2, 1]]
    with pytest.raises(InputError, match="needs the reference index file"):
        build_sid("given", None, ["5"], _params("given"), seed=0, index_file=tmp_path / "missing.json")


def test_bad_inputs_are_named(emb):
    with pytest.raises(InputError, match="unknown tokenizer 'kmeans'"):
        build_sid("kmeans", emb, ["a"], {}, seed=0)
    bad = emb.copy()
    bad[5, 0] = np.nan
    with pytest.raises(InputError, match="5"):
        build_sid("rqkmeans", bad, [str(i) for i in range(300)], _params("rqkmeans", levels=2, codebook_size=8),
                  seed=0)
