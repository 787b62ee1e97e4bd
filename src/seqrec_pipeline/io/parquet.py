"""Kedro dataset for polars tables in Parquet, written atomically and versionable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
from kedro.io.core import DatasetError, Version, get_filepath_str

from seqrec_pipeline.io.versioning import FolderDataset, RunVersionedDataset


class PolarsParquetDataset(RunVersionedDataset[pl.DataFrame, pl.DataFrame]):
    """A polars DataFrame as one Parquet file.

    Saves go to a temporary file renamed into place, so a crash never leaves a
    half-written table where the next run would load it.  With ``versioned: true``
    every run writes a new version and older ones are kept (Kedro versioning).  With ``lazy: true`` it loads
    a ``pl.LazyFrame`` scan instead, so that a consumer reads only the columns it selects, when it needs them
    (the catalog's transcoded ``<name>@lazy`` views of a table).
    """

    def __init__(self, filepath: str, version: Version | None = None, compression: str = "zstd",
                 metadata: dict[str, Any] | None = None, mlflow_artifact_path: str | None = None,
                 lazy: bool = False):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=self._exists_local)
        self._compression = compression
        self._lazy = lazy
        # kedro-mlflow's MlflowArtifactDataset cannot wrap a versioned dataset (Kedro refuses its second save
        # version), so a table that also goes to MLflow is logged here, after its versioned save
        self._mlflow_artifact_path = mlflow_artifact_path
        self.metadata = metadata

    @staticmethod
    def _exists_local(path: str) -> bool:
        return os.path.exists(path)

    def load(self) -> pl.DataFrame | pl.LazyFrame:
        path = get_filepath_str(self._get_load_path(), "file")
        return pl.scan_parquet(path) if self._lazy else pl.read_parquet(path)

    def save(self, data: pl.DataFrame) -> None:
        if not isinstance(data, pl.DataFrame):
            raise DatasetError(f"{type(self).__name__} saves polars DataFrames, got {type(data).__name__}")
        path = get_filepath_str(self._get_save_path(), "file")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        data.write_parquet(tmp, compression=self._compression)
        os.replace(tmp, path)
        if self._mlflow_artifact_path is not None:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_artifact(path, self._mlflow_artifact_path)

    def _exists(self) -> bool:
        try:
            path = get_filepath_str(self._get_load_path(), "file")
        except DatasetError:
            return False
        return os.path.exists(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "compression": self._compression,
                "lazy": self._lazy}


class ParquetParts:
    """A table written part by part (one Parquet file per batch) into a folder, so that a node can produce a
    table larger than memory; :class:`PolarsPartsDataset` moves the parts into place."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def write(self, frame: pl.DataFrame) -> None:
        frame.write_parquet(self.folder / f"part-{self.count:05d}.parquet", compression="zstd")
        self.count += 1

    def clear(self) -> None:
        for f in self.files():
            f.unlink()
        self.count = 0

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.files())


class PolarsPartsDataset(FolderDataset):
    """A table as a folder of Parquet parts, loaded lazily (``pl.LazyFrame``) so that its consumer reads it in
    batches.  Saves a :class:`ParquetParts` (its files are moved, not rewritten) or a polars DataFrame /
    LazyFrame (one part; a LazyFrame is streamed), into a temporary folder renamed into place."""

    def load(self) -> pl.LazyFrame:
        return pl.scan_parquet(sorted(Path(self._load_path()).glob("part-*.parquet")))

    def _write(self, data: Any, folder: Path) -> None:
        folder.mkdir(parents=True)
        if isinstance(data, ParquetParts):
            for f in data.files():
                shutil.move(f, folder / f.name)
            data.discard()
        elif isinstance(data, pl.DataFrame):
            data.write_parquet(folder / "part-00000.parquet", compression="zstd")
        elif isinstance(data, pl.LazyFrame):
            data.sink_parquet(folder / "part-00000.parquet", compression="zstd")
        else:
            raise DatasetError(f"{type(self).__name__} saves ParquetParts or polars frames, got {type(data).__name__}")
