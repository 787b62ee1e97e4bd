"""Versioned datasets that load, once saved, the version this run saved (not the newest one on disk)."""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable, TypeVar

from kedro.io.core import AbstractVersionedDataset, Version, generate_timestamp

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
