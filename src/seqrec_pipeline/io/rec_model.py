"""Kedro dataset for a discriminative baseline: ``config.json`` + ``model.safetensors`` in a directory.

Nothing in it can execute code when loaded: the config is JSON, the weights are safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from seqrec_pipeline.io.versioning import FolderDataset


class RecModelDataset(FolderDataset):
    """Saves a ``SequentialRecommender`` (its ``config`` and ``state_dict``) atomically; loads it rebuilt with
    ``build_discriminative(**config)``."""

    def load(self) -> Any:
        from safetensors.torch import load_file

        from seqrec_pipeline.models.discriminative import build_discriminative

        path = Path(self._load_path())
        config = json.loads((path / "config.json").read_text())
        model = build_discriminative(**config)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.eval()

    def _write(self, model: Any, folder: Path) -> None:
        from safetensors.torch import save_file

        if not hasattr(model, "config") or not hasattr(model, "state_dict"):
            raise DatasetError(f"RecModelDataset saves discriminative models, got {type(model).__name__}")
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(model.config, indent=2))
        # contiguous copies: tied or sliced parameters would otherwise share storage, which safetensors refuses
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
                  str(folder / "model.safetensors"))
