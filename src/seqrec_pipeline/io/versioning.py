"""Versioned datasets that load, once saved, the version this run saved (not the newest one on disk), and the
session class that gives every run its own save version."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from functools import wraps
from pathlib import Path, PurePosixPath
from typing import Any, Callable, TypeVar

from kedro.framework.session import KedroSession
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, generate_timestamp, get_filepath_str
from kedro.utils import find_kedro_project

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


class RunVersionedDataset(AbstractVersionedDataset[_DI, _DO]):
    """Base of the project's versioned datasets.

    Kedro loads an unpinned versioned dataset from the newest version on disk.  When two runs of a pipeline
    overlap, a node of run A would then load what run B saved later (B's model, B's SID table).  After a
    save, this dataset pins its load version to the version it saved, so the rest of the run reads exactly
    what the run wrote.  An explicit ``--load-versions`` pin is replaced too: the run's own output wins.
    The same holds for another catalog entry of the same files (a transcoded view such as
    ``sequences@lazy`` of ``sequences@eager``): it loads the version its run saved through the sibling.
    """

    def resolve_load_version(self) -> str | None:
        save = self._version.save if self._version else None
        # the run's save version exists only if this run wrote it (each run has its own, OwnVersionSession)
        if save and self._exists_function(str(self._get_versioned_path(save))):
            return save
        return super().resolve_load_version()

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


class OwnVersionSession(KedroSession):
    """A Kedro session whose id, the save version of every versioned dataset of its run, is its own.

    Kedro's session id is a millisecond timestamp: two runs started in the same millisecond would write
    into the same version folders (and the second fails: "must not exist if versioning is enabled").  The
    id is taken under an OS lock on a file of the project, held until the clock has moved past it, so
    every run started on this machine gets a later id than the one before it.
    """

    def __init__(self, session_id: str, *args: Any, project_path: Path | str | None = None, **kwargs: Any):
        root = Path(project_path or find_kedro_project(Path.cwd()) or Path.cwd())
        super().__init__(_next_session_id(root, session_id), *args, project_path=project_path, **kwargs)


def _next_session_id(root: Path, proposed: str) -> str:
    try:
        handle = open(root / ".session.lock", "a")  # noqa: SIM115  # held across the wait below
    except OSError:  # a read-only project cannot run versioned saves anyway
        return proposed
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        session_id = max(proposed, generate_timestamp())
        while generate_timestamp() <= session_id:  # the next holder of the lock sees a later millisecond
            time.sleep(0.0005)
    return session_id
