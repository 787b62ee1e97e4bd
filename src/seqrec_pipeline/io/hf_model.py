"""Kedro dataset for a generative model as a Hugging Face ``save_pretrained`` directory."""

from __future__ import annotations

import os
import shutil
from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, Version, get_filepath_str

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.versioning import RunVersionedDataset


class HFModelDataset(RunVersionedDataset[Any, Any]):
    """Saves with ``save_pretrained`` into a temporary folder renamed into place (atomic);
    loads with the project's ``load_model`` (dispatch on the config's model_type)."""

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.isdir)
        self.metadata = metadata

    def load(self) -> Any:
        from seqrec_pipeline.models.generative import load_model

        if not self._exists():
            raise InputError(f"no trained model in {self._filepath}: train one first with `kedro run "
                             "--pipeline=smb_decoder` and the same dataset, model and tokenizer parameters")
        return load_model(get_filepath_str(self._get_load_path(), "file"))

    def save(self, model: Any) -> None:
        if not hasattr(model, "save_pretrained"):
            raise DatasetError(f"HFModelDataset saves models with save_pretrained, got {type(model).__name__}")
        path = get_filepath_str(self._get_save_path(), "file")
        tmp = f"{path}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
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
