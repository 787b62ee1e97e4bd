"""Kedro dataset for a discriminative baseline: ``config.json`` + ``model.safetensors`` in a directory.

Nothing in it can execute code when loaded: the config is JSON, the weights are safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.versioning import FolderDataset


class RecModelDataset(FolderDataset):
    """Saves a ``SequentialRecommender`` (its ``config`` and ``state_dict``) atomically; loads it rebuilt with
    ``build_discriminative(**config)``."""

    def load(self) -> Any:
        if not self._exists():
            raise InputError(f"no trained model in {self._filepath}: train one first with `kedro run "
                             "--pipeline=smb_rec` and the same dataset, model and split.protocol parameters")
        return read_rec_model(self._load_path())

    def _write(self, model: Any, folder: Path) -> None:
        if not hasattr(model, "config") or not hasattr(model, "state_dict"):
            raise DatasetError(f"RecModelDataset saves discriminative models, got {type(model).__name__}")
        folder.mkdir(parents=True)
        write_rec_model(model, folder)


def read_rec_model(folder: str | Path) -> Any:
    """The model in ``folder`` (``config.json`` + ``model.safetensors``), rebuilt by ``build_discriminative``."""
    from safetensors.torch import load_file

    from seqrec_pipeline.models.discriminative import build_discriminative

    folder = Path(folder)
    model = build_discriminative(**json.loads((folder / "config.json").read_text()))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


def write_rec_model(model: Any, folder: str | Path) -> None:
    """``model``'s config and weights into the existing folder ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "config.json").write_text(json.dumps(model.config, indent=2))
    # contiguous copies: tied or sliced parameters would otherwise share storage, which safetensors refuses
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
