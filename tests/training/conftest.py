"""Fixtures of the training tests (helpers live in helpers.py)."""

from __future__ import annotations

import polars as pl
import pytest

from .helpers import pattern_sequences


@pytest.fixture(scope="session")
def sequences() -> pl.DataFrame:
    return pattern_sequences()
