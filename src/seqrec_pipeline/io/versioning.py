"""Versioned datasets that load, once saved, the version this run saved (not the newest one on disk)."""

from __future__ import annotations

import os
import shutil
from functools import wraps
from pathlib import Path, PurePosixPath
from typing import Any, Callable, TypeVar

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, generate_timestamp, get_filepath_str

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


class RunVersionedDataset(AbstractVersionedDataset[_DI, _DO]):
    """Base of the project's versioned datasets.

    Kedro loads an unpinned versioned dataset from the newest version on disk.  When two runs of a pipeline
    overlap, a node of run A would then load what run B saved later (B's model, B's SID table).  After a
    save, this dataset pins its load version to the version it saved, so the rest of the run reads exactly
    what the run wrote.  An explicit ``--load-versions`` pin is replaced too: the run's own output wins.
    """

    @classmethod
    def _save_wrapper(cls, save_func: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        versioned_save = super()._save_wrapper(save_func)

        @wraps(save_func)
        def save(self, data: Any) -> None:
            before = self._version
            if before is not None:
                version = before.save or generate_timestamp()
                # pinned before the save, so Kedro's load/save consistency check compares the run's own version
                self._version = Version(load=version, save=version)
            try:
                versioned_save(self, data)
            except BaseException:
                self._version = before
                raise

        save.__savewrapped__ = True  # type: ignore[attr-defined]  # subclasses must not wrap it again
        return save


class FolderDataset(RunVersionedDataset[Any, Any]):
    """A versioned dataset stored as a directory, written into a temporary folder renamed into place (a reader
    never sees half a model).  Subclasses implement ``load`` and ``_write(data, folder)``."""

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.isdir)
        self.metadata = metadata

    def _write(self, data: Any, folder: Path) -> None:
        raise NotImplementedError

    def save(self, data: Any) -> None:
        path = get_filepath_str(self._get_save_path(), "file")
        tmp = Path(f"{path}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._write(data, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.replace(tmp, path)

    def _load_path(self) -> str:
        return get_filepath_str(self._get_load_path(), "file")

    def _exists(self) -> bool:
        try:
            return os.path.isdir(self._load_path())
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
