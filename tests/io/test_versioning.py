"""A dataset saved in a run loads what that run saved afterwards, even when an overlapping run of the same
pipeline saved it again in between (Kedro alone would load the newest version on disk, or the shared file)."""

import importlib
import multiprocessing
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from kedro.io.core import DatasetError, Version

from seqrec_pipeline.io.json_file import JSONDataset
from seqrec_pipeline.io.numpy import NumpyDataset
from seqrec_pipeline.io.parquet import PolarsParquetDataset
from seqrec_pipeline.io.versioning import RunVersionedDataset
from tests.conftest import REPO

RUN_A, RUN_B = "2026-01-01T00.00.00.000Z", "2026-01-01T00.00.05.000Z"  # B started later, so B's version is newer

CASES = [
    (PolarsParquetDataset, "t.parquet", pl.DataFrame({"x": [1]}), pl.DataFrame({"x": [2]}), lambda t: t["x"].to_list()),
    (NumpyDataset, "a.npy", np.array([1.0]), np.array([2.0]), lambda a: a.tolist()),
]


@pytest.mark.parametrize(("cls", "name", "data_a", "data_b", "value"), CASES)
def test_each_run_loads_the_version_it_saved(tmp_path, cls, name, data_a, data_b, value):
    path = str(tmp_path / name)
    run_a, run_b = cls(filepath=path, version=Version(None, RUN_A)), cls(filepath=path, version=Version(None, RUN_B))
    run_a.save(data_a)
    run_b.save(data_b)  # B saves after A, before A's next node loads
    run_a.release()  # Kedro's cached version is gone (as after a release); the pin is not a cache
    assert value(run_a.load()) == value(data_a)
    assert value(run_b.load()) == value(data_b)
    # a run that did not save it (e.g. an evaluation-only run) still loads the newest version
    assert value(cls(filepath=path, version=Version(None, None)).load()) == value(data_b)


def test_a_view_of_the_same_files_loads_the_version_its_run_saved(tmp_path):
    """A transcoded catalog entry (``sequences@lazy`` of ``sequences@eager``) is another dataset object of the
    same files: it never saved, yet it reads what its run saved through the sibling, not a newer run's."""
    path = str(tmp_path / "t.parquet")
    eager_a = PolarsParquetDataset(filepath=path, version=Version(None, RUN_A))
    lazy_a = PolarsParquetDataset(filepath=path, version=Version(None, RUN_A), lazy=True)
    with pytest.raises(DatasetError):  # nothing saved yet: no version to read
        lazy_a.load()
    eager_a.save(pl.DataFrame({"x": [1]}))
    PolarsParquetDataset(filepath=path, version=Version(None, RUN_B)).save(pl.DataFrame({"x": [2]}))
    assert lazy_a.load().collect()["x"].to_list() == [1]
    # a run that saved nothing (an embed-only run) reads the newest version
    assert PolarsParquetDataset(filepath=path, version=Version(None, "2026-01-01T00.00.09.000Z"),
                                lazy=True).load().collect()["x"].to_list() == [2]


def test_a_failed_save_pins_nothing(tmp_path):
    path = str(tmp_path / "a.npy")
    NumpyDataset(filepath=path, version=Version(None, RUN_A)).save(np.array([1.0]))
    later = NumpyDataset(filepath=path, version=Version(None, RUN_B))
    with pytest.raises(DatasetError, match="numpy arrays"):
        later.save([2.0])
    assert later.load().tolist() == [1.0]  # the newest version on disk, not the one that was never written


def test_every_versioned_dataset_of_the_catalog_pins_its_saved_version():
    catalog = yaml.safe_load((REPO / "conf" / "base" / "catalog.yml").read_text())
    versioned = {name: entry["type"] for name, entry in catalog.items()
                 if isinstance(entry, dict) and entry.get("versioned") and not name.startswith("_")}
    assert {"events", "sequences@eager", "sequences@lazy", "sid_table", "item_embeddings", "tokenizer_model",
            "decoder_model", "smb_rec.rec_model"} <= set(versioned)
    assert catalog["sequences@lazy"]["filepath"] == catalog["sequences@eager"]["filepath"]  # one table, two loaders
    assert catalog["sequences@lazy"].get("lazy") is True and "lazy" not in catalog["sequences@eager"]
    for name, dotted in versioned.items():
        module, _, attr = dotted.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), attr), RunVersionedDataset), name
    inner = {name: entry["dataset"] if isinstance(entry.get("dataset"), dict) else entry
             for name, entry in catalog.items() if isinstance(entry, dict)}
    json_files = {name: entry["type"] for name, entry in inner.items() if "JSONDataset" in entry.get("type", "")}
    assert {"sid_vocab", "train.training_settings", "{pipeline}.metrics"} <= set(json_files)
    for name, dotted in json_files.items():  # the project's JSONDataset (or a subclass: OptionalJSONDataset)
        module, _, attr = dotted.rpartition(".")
        assert module == "seqrec_pipeline.io.json_file", name
        assert issubclass(getattr(importlib.import_module(module), attr), JSONDataset), name


def test_an_optional_json_file_loads_none_until_written(tmp_path):
    from seqrec_pipeline.io.json_file import OptionalJSONDataset

    dataset = OptionalJSONDataset(filepath=str(tmp_path / "head.json"))
    assert dataset.load() is None
    dataset.save({"gate_bias": [1.0]})
    assert dataset.load() == {"gate_bias": [1.0]}


def test_a_saved_json_file_loads_what_its_run_saved(tmp_path):
    path = str(tmp_path / "settings.json")
    run_a, run_b = JSONDataset(filepath=path, save_args={"indent": 2}), JSONDataset(filepath=path)
    run_a.save({"seed": 1, "levels": (4, 3)})
    run_b.save({"seed": 2})  # the file is shared: B overwrites it before A's next node reads it
    assert run_a.load() == {"seed": 1, "levels": [4, 3]}  # what reading A's file back would give
    assert run_b.load() == {"seed": 2} and JSONDataset(filepath=path).load() == {"seed": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # written atomically, no leftovers


def _session_ids(root: str, n: int, start_at: float) -> list[str]:
    from kedro.io.core import generate_timestamp

    from seqrec_pipeline.io.versioning import _next_session_id

    while time.time() < start_at:  # every process asks in the same instant
        pass
    return [_next_session_id(Path(root), generate_timestamp()) for _ in range(n)]


def test_sessions_started_together_get_distinct_increasing_ids(tmp_path):
    # four processes asking at once: without the lock several would share a millisecond
    start_at = time.time() + 5  # after the four interpreters have started
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        batches = pool.starmap(_session_ids, [(str(tmp_path), 25, start_at)] * 4)
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == 100
    assert all(batch == sorted(batch) for batch in batches)  # each process: later runs, later versions
    assert (tmp_path / ".session.lock").exists()


def test_project_session_class_is_the_own_version_one():
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    from seqrec_pipeline.io.versioning import OwnVersionSession

    bootstrap_project(REPO)
    assert settings.SESSION_CLASS is OwnVersionSession
