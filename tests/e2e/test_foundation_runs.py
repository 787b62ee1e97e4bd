"""`kedro run` of ingest/preprocess on real data slices, checked through the artifacts and MLflow."""

import json
import shutil
import time

import polars as pl
import pytest

from tests.e2e.conftest import Project


def _ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_preprocess_taobao_raw_log_end_to_end(project):
    _ok(project.run("run", "--pipeline=preprocess", "--params=dataset=taobao_ci"))
    ingest = json.loads((project.path / "data/02_intermediate/taobao_ci/ingest_report.json").read_text())
    rejected = pl.read_parquet(project.latest("data/02_intermediate/taobao_ci/rejected.parquet"))
    events = pl.read_parquet(project.latest("data/02_intermediate/taobao_ci/events.parquet") / "*.parquet")
    assert ingest["n_raw"] == 4321 == events.height + rejected.height
    assert ingest["n_rejected"] == rejected.height
    assert set(rejected["reason"]) <= {"timestamp outside time_window [1511539200, 1512316799]"}
    assert not list((project.path / "data/02_intermediate/taobao_ci/work").iterdir())  # parts moved, nothing spilled

    seq = pl.read_parquet(project.latest("data/03_primary/taobao_ci/sequences.parquet"))
    items = pl.read_parquet(project.latest("data/03_primary/taobao_ci/items.parquet"))
    assert seq.schema["item"] == pl.List(pl.Int32)
    assert seq["item"].explode().max() == items.height - 1
    assert 0 < seq.height <= 43
    ls = seq.filter(pl.col("last_session_test") >= 0)
    assert (ls["n_sessions"] >= 3).all() and (ls["last_session_valid"] < ls["last_session_test"]).all()

    report = json.loads((project.path / "data/08_reporting/taobao_ci/dataset_report.json").read_text())
    assert report["n_users"] == seq.height and report["n_events"] == seq["n_events"].sum()
    assert sum(b["events"] for b in report["behaviors"].values()) == report["n_events"]
    assert report["behaviors"]["buy"]["target"] is True
    png = project.path / "data/08_reporting/taobao_ci/dataset_report.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000

    # one MLflow run in the dataset's experiment with params, dataset metrics and the report artifacts
    runs = project.mlflow(
        "select r.run_uuid, r.status, r.artifact_uri from runs r join experiments e "
        "on r.experiment_id = e.experiment_id where e.name = 'taobao_ci'")
    assert len(runs) == 1 and runs[0][1] == "FINISHED"
    run_id = runs[0][0]
    metrics = dict(project.mlflow("select key, value from metrics where run_uuid = ?", run_id))
    assert metrics["data/n_users"] == seq.height
    assert metrics["ingest/n_raw"] == metrics["ingest/n_valid"] + metrics["ingest/n_rejected"] == 4321
    params = dict(project.mlflow("select key, value from params where run_uuid = ?", run_id))
    assert params["dataset"] == "taobao_ci" and params["split.protocol"] == "last_session"
    assert params["datasets.taobao_ci.filters.min_user_events"] == "2"
    assert "git_commit" in params
    artifacts = project.path / runs[0][2].split("mlruns", 1)[1].lstrip("/")
    artifacts = project.path / "mlruns" / artifacts.relative_to(project.path)
    assert {p.name for p in (artifacts / "reports").iterdir()} == {"dataset_report.json", "dataset_report.png"}


def test_rerun_keeps_earlier_versions(project):
    _ok(project.run("run", "--pipeline=ingest", "--params=dataset=retail_ci"))
    _ok(project.run("run", "--pipeline=ingest", "--params=dataset=retail_ci"))
    versions = list((project.path / "data/02_intermediate/retail_ci/events.parquet").iterdir())
    assert len(versions) == 2
    a, b = (pl.read_parquet(v / "events.parquet" / "*.parquet") for v in versions)
    assert a.equals(b) and a.height == 6086


def test_bad_declaration_prints_a_message_not_a_traceback(project):
    (project.path / "conf/local/parameters_bad.yml").write_text(
        "datasets:\n  broken:\n    events: retailrocket_ci150.csv\n    path: data/01_raw/retail_ci\n"
        "    behaviors: {view: 0, cart: 1, buy: 2}\n")
    result = project.run("run", "--pipeline=ingest", "--params=dataset=broken")
    assert result.returncode == 2
    assert "missing required column(s) user_id (column 'user_id')" in result.stderr
    assert "Map them with `columns:" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_local_declarations_add_to_the_built_in_ones(project):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project.path)
    with KedroSession.create(project_path=project.path) as session:
        declared = session.load_context().params["datasets"]
    assert {"ml-100k", "retailrocket", "taobao", "scientific", "taobao_ci", "retail_ci"} <= set(declared)


@pytest.mark.slow
def test_main_job_on_default_dataset_fetches_ml100k(project):
    """The README's main command on the default dataset (downloads the RecBole wheel once)."""
    result = project.run("run", "--pipeline=preprocess")
    if result.returncode == 2 and "could not download" in result.stderr:
        pytest.skip("package index unreachable: " + result.stderr.strip().splitlines()[-1][:200])
    _ok(result)
    raw = project.path / "data/01_raw/ml-100k"
    assert (raw / "ml-100k.inter").stat().st_size == 1979230
    report = json.loads((project.path / "data/08_reporting/ml-100k/dataset_report.json").read_text())
    assert report["ingest"]["n_raw"] == 100000 and report["ingest"]["n_rejected"] == 0
    assert report["n_users"] == 943
    assert {b: v["level"] for b, v in report["behaviors"].items()} == {"dislike": 0, "neutral": 1, "like": 2}
    assert report["behaviors"]["like"]["events"] > report["behaviors"]["dislike"]["events"] > 0
    items = pl.read_parquet(project.latest("data/03_primary/ml-100k/items.parquet"))
    assert items.filter(pl.col("item_id") == "1")["movie_title"][0] == "Toy Story"
    # second run: cached raw files, no download
    mtime = (raw / "ml-100k.inter").stat().st_mtime_ns
    second = _ok(project.run("run", "--pipeline=ingest"))
    assert "cached, no download" in second.stdout + second.stderr
    assert (raw / "ml-100k.inter").stat().st_mtime_ns == mtime


def test_preprocess_in_spilled_user_buckets_gives_the_in_memory_tables(project):
    """`kedro run` with tiny batches and buckets: the stored tables equal build_primary on the whole log in memory."""
    from seqrec_pipeline.data.preprocess import build_primary
    from seqrec_pipeline.dataset_spec import FilterSpec

    result = _ok(project.run("run", "--pipeline=preprocess",
                             "--params=dataset=retail_ci,data.batch_rows=1000,data.bucket_events=500"))
    log = result.stdout + result.stderr
    assert "ingest: retailrocket_ci150.csv: 6,086 rows" in log and "user bucket(s)" in log  # progress lines
    ds = project.path / "data/02_intermediate/retail_ci"
    parts = sorted(project.latest("data/02_intermediate/retail_ci/events.parquet").glob("part-*.parquet"))
    assert len(parts) == 7 and not list((ds / "work").iterdir())
    stats = json.loads((project.path / "data/03_primary/retail_ci/preprocess_stats.json").read_text())
    assert stats["user_buckets"] >= 10
    events = pl.read_parquet(parts)
    filters = FilterSpec(min_user_events=3, min_item_events=2)
    in_memory = build_primary(events, {"view": 0, "cart": 1, "buy": 2}, filters, 30)
    assert in_memory.stats["user_buckets"] == 1
    for name in ("sequences", "items", "users"):
        stored = pl.read_parquet(project.latest(f"data/03_primary/retail_ci/{name}.parquet"))
        assert stored.equals(getattr(in_memory, name)), name


def test_a_preprocess_killed_mid_bucket_leaves_nothing_a_later_run_reads(project):
    """SIGKILL (no cleanup runs) while user buckets are spilled: no partial table is visible, and the next run
    removes the dead run's spill folder and writes the same tables as an uninterrupted run."""
    params = "--params=dataset=retail_ci,data.batch_rows=1000,data.bucket_events=500"
    _ok(project.run("run", "--pipeline=ingest", params))
    work = project.path / "data/02_intermediate/retail_ci/work"
    primary = project.path / "data/03_primary/retail_ci"
    process = project.start("run", "--pipeline=preprocess", params)
    deadline = time.monotonic() + 300  # a bound on a hang, not a performance check
    while not (work.is_dir() and any(p.name.startswith("spill-") for p in work.iterdir())):
        assert process.poll() is None, "preprocess ended before it spilled a bucket"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.kill()
    process.communicate(timeout=60)
    assert [p.name for p in work.iterdir() if p.name.startswith("spill-")]  # the dead run's folder is left
    for name in ("sequences", "items", "users"):  # nothing half-written where a later run would read it
        versions = list((primary / f"{name}.parquet").glob("*")) if (primary / f"{name}.parquet").exists() else []
        assert versions == [], f"{name}: {versions}"

    _ok(project.run("run", "--pipeline=preprocess", params))
    assert not list(work.iterdir())  # the dead run's spill folder is gone, the new one cleaned up
    reference = project.path.parent / "reference"  # the same project, never interrupted
    shutil.copytree(project.path, reference, ignore=shutil.ignore_patterns("03_primary", "mlruns", "mlflow.db"))
    (reference / "data/03_primary").mkdir()
    _ok(Project(reference).run("run", "--pipeline=preprocess", params))
    for name in ("sequences", "items", "users"):
        again = pl.read_parquet(Project(reference).latest(f"data/03_primary/retail_ci/{name}.parquet"))
        assert pl.read_parquet(project.latest(f"data/03_primary/retail_ci/{name}.parquet")).equals(again), name
