"""Fixtures for the generative-model tests (helpers live in genmodel_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Make the helper module importable whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).parent))

from genmodel_helpers import BEHAVIORS  # noqa: E402

from seqrec_pipeline.vocab import TokenVocab  # noqa: E402


@pytest.fixture(autouse=True)
def _single_thread():
    """Other engineers share the 2 cores; one thread also makes timings of the test suite predictable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def vocab() -> TokenVocab:
    return TokenVocab(BEHAVIORS, (6, 5, 7))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
