"""The CPU dropout helpers: the same distribution as torch's dropout, and gamer's math attention equals SDPA."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from seqrec_pipeline.models.generative.common import Dropout, dropout
from seqrec_pipeline.models.generative.gamer import _math_attention_cpu_dropout, grouped_query_attention


def test_dropout_zeroes_a_share_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, 0.2)
    zeros = (y == 0).float().mean().item()
    assert zeros == pytest.approx(0.2, abs=0.004)
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1.25)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    layer = Dropout(0.5).eval()
    assert layer(x) is x


def test_math_attention_equals_sdpa_and_drops_weights():
    g = torch.Generator().manual_seed(0)
    batch, n_kv, n_rep, q_len, k_len, dim = 2, 2, 3, 5, 7, 8
    query = torch.randn(batch, n_kv, n_rep * q_len, dim, generator=g)
    key, value = torch.randn(batch, n_kv, k_len, dim, generator=g), torch.randn(batch, n_kv, k_len, dim, generator=g)
    mask = torch.rand(batch, 1, q_len, k_len, generator=g) < 0.6
    mask[..., 0] = True  # every row has a key
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask.repeat(1, 1, n_rep, 1))
    assert_close(_math_attention_cpu_dropout(query, key, value, mask, 0.0), expected, atol=1e-6, rtol=1e-5)

    # with dropout: every output is a combination of kept, rescaled weights -> with all-equal values the
    # output is (kept weight share) / (1 - p) times the value; averaged over many rows it is ~1
    torch.manual_seed(1)
    ones = torch.ones(1, 1, 4, 4)
    everything = torch.ones(1, 1, 20_000, 4, dtype=torch.bool)
    out = _math_attention_cpu_dropout(torch.zeros(1, 1, 20_000, 4), ones, ones, everything, 0.5)
    assert out.mean().item() == pytest.approx(1.0, abs=0.02) and out.std().item() > 0.1

    # grouped_query_attention takes that path only for CPU training with dropout, and returns [B, Q, H*D]
    heads = query.view(batch, n_kv, n_rep, q_len, dim).reshape(batch, n_kv * n_rep, q_len, dim)
    plain = grouped_query_attention(heads, key, value, mask, 0.0)
    assert plain.shape == (batch, q_len, n_kv * n_rep * dim)
    assert_close(plain.view(batch, q_len, n_kv, n_rep, dim).permute(0, 2, 3, 1, 4).reshape(expected.shape), expected,
                 atol=1e-6, rtol=1e-5)
