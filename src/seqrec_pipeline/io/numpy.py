"""Kedro dataset for one numpy array (.npy), written atomically and versionable."""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from kedro.io.core import DatasetError, Version, get_filepath_str

from seqrec_pipeline.io.versioning import RunVersionedDataset


class NumpyDataset(RunVersionedDataset[np.ndarray, np.ndarray]):
    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.exists)
        self.metadata = metadata

    def load(self) -> np.ndarray:
        return np.load(get_filepath_str(self._get_load_path(), "file"), allow_pickle=False)

    def save(self, data: np.ndarray) -> None:
        if not isinstance(data, np.ndarray):
            raise DatasetError(f"NumpyDataset saves numpy arrays, got {type(data).__name__}")
        path = get_filepath_str(self._get_save_path(), "file")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}.npy"
        np.save(tmp, data, allow_pickle=False)
        os.replace(tmp, path)

    def _exists(self) -> bool:
        try:
            return os.path.exists(get_filepath_str(self._get_load_path(), "file"))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
