"""Kedro dataset for a generative model as a Hugging Face ``save_pretrained`` directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.versioning import FolderDataset


class HFModelDataset(FolderDataset):
    """Saves with ``save_pretrained`` (atomically, see :class:`FolderDataset`); loads with the project's
    ``load_model`` (dispatch on the config's model_type)."""

    def load(self) -> Any:
        from seqrec_pipeline.models.generative import load_model

        if not self._exists():
            raise InputError(f"no trained model in {self._filepath}: train one first with `kedro run "
                             "--pipeline=smb_decoder` and the same dataset, model and tokenizer parameters")
        return load_model(self._load_path())

    def _write(self, model: Any, folder: Path) -> None:
        if not hasattr(model, "save_pretrained"):
            raise DatasetError(f"HFModelDataset saves models with save_pretrained, got {type(model).__name__}")
        model.save_pretrained(str(folder))
