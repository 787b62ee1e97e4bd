"""Kedro dataset for a discriminative baseline: ``config.json`` + ``model.safetensors`` in a directory.

Nothing in it can execute code when loaded: the config is JSON, the weights are safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, Version, get_filepath_str

from seqrec_pipeline.io.versioning import RunVersionedDataset


class RecModelDataset(RunVersionedDataset[Any, Any]):
    """Saves a ``SequentialRecommender`` (its ``config`` and ``state_dict``) atomically; loads it rebuilt with
    ``build_discriminative(**config)``."""

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.isdir)
        self.metadata = metadata

    def load(self) -> Any:
        from safetensors.torch import load_file

        from seqrec_pipeline.models.discriminative import build_discriminative

        path = get_filepath_str(self._get_load_path(), "file")
        with open(os.path.join(path, "config.json")) as handle:
            config = json.load(handle)
        model = build_discriminative(**config)
        model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
        return model.eval()

    def save(self, model: Any) -> None:
        from safetensors.torch import save_file

        if not hasattr(model, "config") or not hasattr(model, "state_dict"):
            raise DatasetError(f"RecModelDataset saves discriminative models, got {type(model).__name__}")
        path = get_filepath_str(self._get_save_path(), "file")
        tmp = f"{path}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with open(os.path.join(tmp, "config.json"), "w") as handle:
            json.dump(model.config, handle, indent=2)
        # contiguous copies: tied or sliced parameters would otherwise share storage, which safetensors refuses
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
                  os.path.join(tmp, "model.safetensors"))
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.replace(tmp, path)

    def _exists(self) -> bool:
        try:
            return os.path.isdir(get_filepath_str(self._get_load_path(), "file"))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
