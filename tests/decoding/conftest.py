"""Fixtures of the decoding tests (helpers live in helpers.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Other engineers share the 2 cores; tiny models gain nothing from threads anyway."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
