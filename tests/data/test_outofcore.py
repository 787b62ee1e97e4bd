"""Out-of-core ingest and preprocess: user buckets spilled to disk give the in-memory tables row for row,
events as Parquet parts, spill folders of interrupted runs, atomic saves."""

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seqrec_pipeline.data.ingest import ingest_events
from seqrec_pipeline.data.preprocess import build_primary, ordered_ids
from seqrec_pipeline.dataset_spec import FilterSpec, resolve_dataset
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.parquet import ParquetParts, PolarsPartsDataset
from seqrec_pipeline.io.workdir import spill_folder
from seqrec_pipeline.params import load_parameters

LEVELS = {"view": 0, "cart": 1, "buy": 2}
FILTERS = FilterSpec(min_user_events=3, min_item_events=2, min_sessions=3)


def random_log(n: int, seed: int = 0, sessions: bool = False) -> pl.DataFrame:
    """Heavy-tailed users, Zipf items, bursts of events, exact duplicates and string ids of mixed width."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.5, n) % 97
    items = rng.zipf(1.3, n) % 211
    t = 1_500_000_000 + np.cumsum(rng.exponential(600, n)).astype(np.int64)
    frame = pl.DataFrame({
        "user_id": [f"{u:0{1 + u % 3}d}" for u in users],  # "7", "07" and "007" are three users
        "item_id": [f"i{v}" for v in items],
        "behavior": rng.choice(list(LEVELS), n, p=[0.8, 0.12, 0.08]),
        "timestamp": t,
        "session_id": (pl.Series((t // 7200).astype(str)) if sessions else pl.Series([None] * n, dtype=pl.Utf8)),
    })
    dup = frame.sample(n // 20, seed=seed)  # exact duplicates, later in the file
    frame = pl.concat([frame, dup]).sample(fraction=1.0, shuffle=True, seed=seed)
    return frame.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))


def assert_same_primary(a, b):
    for name in ("sequences", "items", "users", "behaviors"):
        assert_frame_equal(getattr(a, name), getattr(b, name))
    assert {k: v for k, v in a.stats.items() if k != "user_buckets"} == {
        k: v for k, v in b.stats.items() if k != "user_buckets"}


@pytest.mark.parametrize("sessions", [False, True])
def test_user_buckets_spilled_to_disk_give_the_in_memory_tables_row_for_row(tmp_path, sessions):
    log = random_log(4000, seed=1, sessions=sessions)
    in_memory = build_primary(log, LEVELS, FILTERS, 30)
    assert in_memory.stats["user_buckets"] == 1 and in_memory.stats["n_duplicates"] >= 150
    assert in_memory.stats["n_filtered_kcore"] > 0  # the global k-core removes events across buckets
    log.write_parquet(tmp_path / "events.parquet")
    for bucket_events, batch_rows in [(1, 997), (700, 300), (2500, 5000)]:
        work = tmp_path / f"work{bucket_events}"
        bucketed = build_primary(pl.scan_parquet(tmp_path / "events.parquet"), LEVELS, FILTERS, 30,
                                 bucket_events=bucket_events, batch_rows=batch_rows, work_dir=work)
        assert bucketed.stats["user_buckets"] > 1
        assert_same_primary(bucketed, in_memory)
        assert list(work.iterdir()) == []  # the spill folder is gone
    assert in_memory.sequences["user_idx"].to_list() == list(range(in_memory.sequences.height))


def test_real_retailrocket_slice_gives_the_same_tables_in_buckets(shared_data, tmp_path):
    spec = resolve_dataset("r", {"r": {"path": str(shared_data / "ci"), "events": "retailrocket_ci150.csv",
                                       "columns": {"user_id": "user", "item_id": "item"}, "behaviors": LEVELS}})
    events, _, levels = ingest_events(spec, batch_rows=1000)
    parts = ParquetParts(tmp_path / "parts")
    n_valid, _, _ = ingest_events(spec, batch_rows=1000, parts=parts)
    assert n_valid == events.height == 6086 and len(parts.files()) == 7
    assert_frame_equal(parts.scan().collect(), events)
    in_memory = build_primary(events, levels, FILTERS, 30)
    bucketed = build_primary(parts.scan(), levels, FILTERS, 30, bucket_events=400, batch_rows=1000,
                             work_dir=tmp_path / "work")
    assert bucketed.stats["user_buckets"] >= 10 and in_memory.stats["n_users"] > 50
    assert_same_primary(bucketed, in_memory)


def test_numeric_ids_sort_as_numbers_and_equal_numbers_by_their_text():
    ids = pl.DataFrame({"user_id": ["10", "9", "7", "100", "07"]})
    assert ordered_ids(ids, "user_id")["user_id"].to_list() == ["07", "7", "9", "10", "100"]
    mixed = pl.DataFrame({"user_id": ["b", "10", "9", "a"]})
    assert ordered_ids(mixed, "user_id")["user_id"].to_list() == ["10", "9", "a", "b"]


def test_a_failed_bucketed_preprocess_removes_its_spill_folder(tmp_path):
    log = random_log(600, seed=2)
    with pytest.raises(InputError, match="no events left after the k-core filter"):
        build_primary(log, LEVELS, FilterSpec(min_user_events=10_000, min_item_events=1), 30,
                      bucket_events=100, batch_rows=100, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_spill_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"spill-{dead.stdout.strip()}-abc"
    (stale / "b00000-00000.arrow").parent.mkdir()
    (stale / "b00000-00000.arrow").write_bytes(b"half")
    live = tmp_path / f"spill-{os.getppid()}-def"
    live.mkdir()
    mine = spill_folder(tmp_path)
    assert not stale.exists() and live.is_dir()
    assert mine.is_dir() and mine.name.startswith(f"spill-{os.getpid()}-")


def test_parts_dataset_moves_parts_into_place_and_loads_lazily(tmp_path):
    parts = ParquetParts(tmp_path / "work" / "spill-1")
    parts.write(pl.DataFrame({"a": [1, 2]}))
    parts.write(pl.DataFrame({"a": [3]}))
    dataset = PolarsPartsDataset(str(tmp_path / "events.parquet"))
    dataset.save(parts)
    loaded = dataset.load()
    assert isinstance(loaded, pl.LazyFrame) and loaded.collect()["a"].to_list() == [1, 2, 3]
    assert not parts.folder.exists()  # moved, not copied
    assert sorted(p.name for p in (tmp_path / "events.parquet").iterdir()) == ["part-00000.parquet",
                                                                            "part-00001.parquet"]


def test_a_failing_parts_save_leaves_the_earlier_table_and_no_temporary_folder(tmp_path):
    dataset = PolarsPartsDataset(str(tmp_path / "events.parquet"))
    dataset.save(pl.DataFrame({"a": [1]}))
    with pytest.raises(Exception, match="saves ParquetParts or polars frames"):
        dataset.save({"a": [2]})
    assert dataset.load().collect()["a"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["events.parquet"]


def test_a_ragged_line_after_streamed_parts_restarts_them_from_the_careful_parser(tmp_path):
    body = "\n".join(f"{u},{u + 1},view,{1433221969 + u}" for u in range(30))
    (tmp_path / "e.csv").write_text("user_id,item_id,behavior,timestamp\n" + body + "\n5,6,view\n")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS}})
    parts = ParquetParts(tmp_path / "parts")
    n_valid, rejected, _ = ingest_events(spec, batch_rows=8, parts=parts)
    assert n_valid == 30 and rejected["source_row"].to_list() == [31]
    assert parts.scan().collect()["source_row"].to_list() == list(range(1, 31))  # no batch twice


def test_data_parameters_are_validated_with_a_one_line_message():
    assert load_parameters({}).data.bucket_events >= load_parameters({}).data.batch_rows
    with pytest.raises(InputError, match=r"'data.bucket_events': Input should be greater than or equal to 1"):
        load_parameters({"data.bucket_events": 0})
    with pytest.raises(InputError, match="unknown parameter 'data.bucket_rows'"):
        load_parameters({"data.bucket_rows": 5})


def test_the_dataset_report_over_user_slices_equals_the_whole_table_report():
    from seqrec_pipeline.reporting.dataset import build_report, user_slices

    primary = build_primary(random_log(4000, seed=3), LEVELS, FilterSpec(min_user_events=1, min_item_events=1), 30)
    slices = list(user_slices(primary.sequences, 300))
    assert len(slices) >= 5 and sum(s.height for s in slices) == primary.sequences.height
    whole = build_report("r", primary.sequences, primary.items, primary.behaviors, {}, primary.stats)
    sliced = build_report("r", primary.sequences, primary.items, primary.behaviors, {}, primary.stats, 300)
    assert sliced == whole and whole["repeat_share"]["train"]["view"]["events"] > 0
