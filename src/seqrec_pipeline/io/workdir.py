"""Kedro dataset that hands a node a working directory whose location the catalog decides, and the spill
folders of the data stages in it."""

from __future__ import annotations

import os
import shutil
import tempfile
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


def spill_folder(work_dir: Path) -> Path:
    """A new spill folder of this process in ``work_dir``, after removing those of processes that are gone
    (an interrupted run); a run reads only its own folder."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for old in work_dir.glob("spill-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"spill-{os.getpid()}-", dir=work_dir))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
