"""Kedro dataset that hands a node a working directory whose location the catalog decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class WorkDirDataset(AbstractDataset[None, Path]):
    """``load()`` returns the directory (created if needed); nothing is ever saved through it.  A training
    node keeps its resumable state in it (one subdirectory per training configuration)."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        self._path.mkdir(parents=True, exist_ok=True)
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is a working directory: nodes write into it, they do not save it")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
