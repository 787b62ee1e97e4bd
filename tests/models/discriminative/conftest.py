"""Fixtures for the discriminative-baseline tests: one thread, fixed seeds, tiny models."""

from __future__ import annotations

import pytest
import torch
from discriminative_testutils import MAX_LEN, N_BEHAVIORS, N_ITEMS, TINY, random_batch

from seqrec_pipeline.models.discriminative import build_discriminative


@pytest.fixture(autouse=True)
def _single_thread_and_seed():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def make_model():
    """Tiny model in float64 by default: invariance / leakage tests compare exactly."""

    def make(name: str, n_items=N_ITEMS, n_behaviors=N_BEHAVIORS, max_len=MAX_LEN, dtype=torch.float64, **kw):
        model = build_discriminative(name, n_items, n_behaviors, max_len, **{**TINY[name], **kw})
        return model.to(dtype)

    return make


@pytest.fixture
def batch():
    return random_batch()
