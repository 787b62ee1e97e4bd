"""Kedro dataset for what re-encodes items into semantic IDs (``SIDResult.model``), as a directory.

Nothing in it can execute code when loaded: ``tokenizer.json`` holds the settings, arrays are ``.npy`` files
read with ``allow_pickle=False``, and the RQ-VAE is its ``save_rqvae`` folder (JSON config, a plain
state_dict read with ``weights_only=True``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import DatasetError

from seqrec_pipeline.io.versioning import FolderDataset

MANIFEST = "tokenizer.json"
RQVAE_DIR = "rqvae"


class TokenizerModelDataset(FolderDataset):
    """Saves an RQ-VAE, or a dict of JSON values and numpy arrays (RQ-KMeans centroids, a method's
    settings), atomically (see :class:`FolderDataset`); loads it back (tuples come back as lists)."""

    def load(self) -> Any:
        path = Path(self._load_path())
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("kind") == "rqvae":
            from seqrec_pipeline.models.tokenizers.rqvae import load_rqvae

            return load_rqvae(path / RQVAE_DIR)
        return _decode(manifest["model"], path)

    def _write(self, model: Any, folder: Path) -> None:
        from seqrec_pipeline.models.tokenizers.rqvae import RQVAE, save_rqvae

        if not isinstance(model, RQVAE | dict):
            raise DatasetError(f"TokenizerModelDataset saves an RQVAE or a dict, got {type(model).__name__}")
        folder.mkdir(parents=True)
        if isinstance(model, RQVAE):
            save_rqvae(model, folder / RQVAE_DIR)
            manifest = {"kind": "rqvae"}
        else:
            manifest = {"kind": "dict", "model": _encode(model, "model", folder)}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _encode(value: Any, name: str, folder: Path) -> Any:
    """JSON for ``value``; every numpy array goes to ``<name>.npy`` and is referenced as ``{"npy": file}``."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise DatasetError(f"{name}: object arrays cannot be stored without pickle")
        np.save(folder / f"{name}.npy", value, allow_pickle=False)
        return {"npy": f"{name}.npy"}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, f"{name}.{k}", folder) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{name}.{i}", folder) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise DatasetError(f"{name}: cannot store a {type(value).__name__} (JSON values and numpy arrays only)")


def _decode(value: Any, folder: Path) -> Any:
    if isinstance(value, dict) and "npy" in value:
        return np.load(folder / Path(value["npy"]).name, allow_pickle=False)
    if isinstance(value, dict):
        return {k: _decode(v, folder) for k, v in value["dict"].items()}
    if isinstance(value, list):
        return [_decode(v, folder) for v in value]
    return value
