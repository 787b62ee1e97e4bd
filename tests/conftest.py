"""Shared fixtures: the real datasets in ../shared/data (tests skip cleanly without them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEQREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def base_parameters() -> dict:
    """``conf/base/parameters.yml`` as written: the defaults (``${...}`` interpolations left as text)."""
    return yaml.safe_load((REPO / "conf" / "base" / "parameters.yml").read_text())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ci").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set SEQREC_SHARED_DATA to their folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # CI and dev machines have 2 cores; tests may run beside other work
    import torch

    torch.set_num_threads(1)
