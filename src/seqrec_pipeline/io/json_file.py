"""Kedro dataset for a JSON file that is not versioned (settings, vocabularies, reports)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset


class JSONDataset(AbstractDataset[Any, Any]):
    """A JSON file, written atomically; once saved, it loads what this run saved.

    Unversioned files are shared by every run of the project.  When two runs overlap, a node of run A would
    otherwise read what run B wrote in between (B's training settings: A would train B's configuration).
    The text this dataset wrote is kept and parsed again on load, exactly as reading the file back would.
    """

    def __init__(self, filepath: str, save_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._save_args = dict(save_args or {})
        self._saved: str | None = None
        self.metadata = metadata

    def load(self) -> Any:
        return json.loads(self._saved if self._saved is not None else self._filepath.read_text())

    def save(self, data: Any) -> None:
        text = json.dumps(data, **self._save_args)
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._filepath.with_name(f".{self._filepath.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self._filepath)  # readers never see half a file
        self._saved = text

    def _exists(self) -> bool:
        return self._saved is not None or self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "save_args": self._save_args}


class OptionalJSONDataset(JSONDataset):
    """A JSON file an earlier run may not have written: loads None when it is absent."""

    def load(self) -> Any:
        return super().load() if self._exists() else None
