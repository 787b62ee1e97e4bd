"""Out-of-core ingest + preprocess on a synthetic Taobao-layout log: wall time, peak RSS and events/s per stage.

    python benchmarks/bench_outofcore.py --events 100000000 [--work /tmp/ooc] [--threads 2] [--compare-in-core]

Generates the log with ``gen_taobao.py`` into ``--work`` (never the repository; deleted afterwards unless
``--keep-csv``), then runs each stage in its own child process, so its peak RSS is its own:
- ingest: exactly what the ``ingest`` node calls: streamed read, validation and quarantine, one Parquet part
  per ``data.batch_rows`` batch (the ``events`` dataset's layout), and the rejected rows;
- preprocess: what the ``preprocess`` node calls on the lazily loaded parts (``data.bucket_events`` user
  buckets, spilled when there is more than one), then the primary tables written as the catalog does;
- dataset_report: the ``preprocess`` pipeline's report node on those tables (figures over user slices);
- embed: the ``embed`` node on those tables, loaded as the catalog does (``sequences@lazy``: a scan); no item
  text: the collaborative ``embed.cf`` vectors, the co-occurrence counts built over ``embed.cf_chunk_events``
  chunks; ``--cf-solver`` overrides ``embed.cf_solver``;
- tokenize: the ``tokenize`` node with the default ``rqkmeans`` on those vectors (its own ``n_threads``).
``--bucket-events`` overrides ``data.bucket_events``; ``--compare-in-core`` runs preprocess a second time as
one in-memory bucket and checks that every table is equal row for row.  The JSON goes to ``benchmarks/results/outofcore_<N>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _spec(csv: Path):
    from seqrec_pipeline.dataset_spec import resolve_dataset
    from seqrec_pipeline.params import load_parameters

    params = load_parameters({"dataset": "taobao"}, project=ROOT)
    spec = resolve_dataset("taobao", params.datasets)
    # after load_parameters, which applies the project's logging configuration: progress lines to stderr
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(message)s"))
    for name in ("seqrec_pipeline.data.progress", "seqrec_pipeline.data.preprocess"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers[:] = [handler]
        logger.propagate = False
    return spec.model_copy(update={"path": str(csv.parent), "events": csv.name}), params.data


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB on Linux


def stage_ingest(csv: Path, work: Path) -> dict:
    from seqrec_pipeline.data.ingest import ingest_events, ingest_stats
    from seqrec_pipeline.io.parquet import ParquetParts

    spec, data = _spec(csv)
    t0 = time.perf_counter()
    parts = ParquetParts(work / "events")
    parts.clear()
    n_valid, rejected, levels = ingest_events(spec, data.batch_rows, parts)
    rejected.write_parquet(work / "rejected.parquet")
    stats = ingest_stats(n_valid, rejected)
    (work / "levels.json").write_text(json.dumps(levels))
    return {"seconds": time.perf_counter() - t0, "rows": stats["n_raw"], "n_valid": stats["n_valid"],
            "n_rejected": stats["n_rejected"], "rejected_by_reason": stats["rejected_by_reason"],
            "parts": len(parts.files()), "batch_rows": data.batch_rows}


def stage_preprocess(csv: Path, work: Path, tag: str, bucket_events: int | None) -> dict:
    import polars as pl

    from seqrec_pipeline.data.preprocess import build_primary
    from seqrec_pipeline.io.parquet import ParquetParts

    spec, data = _spec(csv)
    levels = json.loads((work / "levels.json").read_text())
    t0 = time.perf_counter()
    events = ParquetParts(work / "events").scan()
    primary = build_primary(events, levels, spec.filters, spec.session_gap_minutes,
                            bucket_events=bucket_events or data.bucket_events, batch_rows=data.batch_rows,
                            work_dir=work / "spill")
    out = work / f"primary_{tag}"
    out.mkdir(exist_ok=True)
    for name in ("sequences", "items", "users", "behaviors"):
        getattr(primary, name).write_parquet(out / f"{name}.parquet", compression="zstd")
    rows = int(pl.scan_parquet(ParquetParts(work / "events").files()).select(pl.len()).collect().item())
    return {"seconds": time.perf_counter() - t0, "rows": rows, "stats": primary.stats,
            "bucket_events": bucket_events or data.bucket_events}


def stage_report(csv: Path, work: Path, bucket_events: int | None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import polars as pl

    from seqrec_pipeline.reporting.dataset import build_report, report_figure

    _, data = _spec(csv)
    t0 = time.perf_counter()
    tables = {n: pl.read_parquet(work / "primary_buckets" / f"{n}.parquet")
              for n in ("sequences", "items", "behaviors")}
    per_slice = bucket_events or data.bucket_events
    report = build_report("synthetic", tables["sequences"], tables["items"], tables["behaviors"], {}, {}, per_slice)
    report_figure(report, tables["sequences"], tables["items"], per_slice).savefig(work / "dataset_report.png")
    return {"seconds": time.perf_counter() - t0, "rows": report["n_events"], "n_users": report["n_users"],
            "n_items": report["n_items"], "repeat_share_test": report["repeat_share"]["test"]}


def stage_embed(csv: Path, work: Path, solver: str | None) -> dict:
    import numpy as np
    import polars as pl

    from seqrec_pipeline.data.embeddings import cf_solver
    from seqrec_pipeline.io.parquet import PolarsParquetDataset
    from seqrec_pipeline.params import load_parameters
    from seqrec_pipeline.pipelines.embedding.nodes import embed

    _spec(csv)
    params = load_parameters({"dataset": "taobao"} | ({"embed.cf_solver": solver} if solver else {}), project=ROOT)
    t0 = time.perf_counter()
    items = pl.read_parquet(work / "primary_buckets" / "items.parquet")
    # the node's inputs as the catalog loads them: `sequences@lazy` is a scan
    sequences = PolarsParquetDataset(str(work / "primary_buckets" / "sequences.parquet"), lazy=True).load()
    load_seconds = time.perf_counter() - t0
    vectors, info, _ = embed(items, sequences, params.embed.model_dump(), params.seed)
    np.save(work / "item_embeddings.npy", vectors)
    return {"seconds": time.perf_counter() - t0, "load_seconds": round(load_seconds, 1),
            "rows": int(sequences.select(pl.col("n_events").sum()).collect().item()), "n_items": int(vectors.shape[0]),
            "dim": int(vectors.shape[1]), "encoder": info["encoder"],
            "cf_chunk_events": params.embed.cf_chunk_events, "cf_solver": params.embed.cf_solver,
            "solver_used": cf_solver(params.embed, int(vectors.shape[0])),
            "zero_vectors": int((~np.any(vectors, axis=1)).sum())}


def stage_tokenize(csv: Path, work: Path) -> dict:
    import numpy as np
    import polars as pl

    from seqrec_pipeline.params import load_parameters
    from seqrec_pipeline.pipelines.tokenization.nodes import tokenize

    _spec(csv)
    params = load_parameters({"dataset": "taobao", "tokenizer": "rqkmeans"}, project=ROOT)
    t0 = time.perf_counter()
    vectors = np.load(work / "item_embeddings.npy")
    tables = {n: pl.read_parquet(work / "primary_buckets" / f"{n}.parquet") for n in ("items", "behaviors")}
    rows = int(pl.scan_parquet(work / "primary_buckets" / "sequences.parquet").select(pl.col("n_events").sum())
               .collect().item())
    table, _, stats, _, _ = tokenize(vectors, tables["items"], tables["behaviors"], "rqkmeans",
                                     params.tokenizers.model_dump(), params.seed, "taobao", params.datasets)
    return {"seconds": time.perf_counter() - t0, "rows": rows, "n_items": table.height,
            "unique_ratio": stats["unique_ratio"], "max_group_size": stats["max_group_size"],
            "precision": stats.get("precision"), "level_mse": stats.get("level_mse")}


def _child(args: list[str], threads: int) -> dict:
    env = dict(os.environ, POLARS_MAX_THREADS=str(threads), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"stage {args[:2]} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - t0, 1)
    progress = [line for line in done.stderr.splitlines() if "rows/s" in line]
    result["progress_log_lines"] = len(progress)
    result["last_progress_line"] = progress[-1].split(" - ")[-1].strip() if progress else None
    return result


def _rate(stage: dict) -> dict:
    stage["seconds"] = round(stage["seconds"], 1)
    stage["peak_rss_gb"] = round(stage["peak_rss_gb"], 2)
    stage["events_per_s"] = round(stage["rows"] / stage["seconds"]) if stage["seconds"] else None
    return stage


def _equal(work: Path) -> dict:
    import polars as pl

    out = {}
    for name in ("sequences", "items", "users", "behaviors"):
        a = pl.read_parquet(work / "primary_buckets" / f"{name}.parquet")
        b = pl.read_parquet(work / "primary_in_core" / f"{name}.parquet")
        out[name] = {"rows": a.height, "equal": a.equals(b)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/seqrec_outofcore"))
    ap.add_argument("--threads", type=int, default=1, help="polars threads of the stages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-in-core", action="store_true")
    ap.add_argument("--keep-csv", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--stage", choices=["ingest", "preprocess", "report", "embed", "tokenize"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="buckets", help=argparse.SUPPRESS)
    ap.add_argument("--bucket-events", type=int, default=None, help="data.bucket_events (default: the parameter)")
    ap.add_argument("--cf-solver", choices=["auto", "arpack", "randomized"], default=None,
                    help="embed.cf_solver (default: the parameter)")
    args = ap.parse_args()
    if args.stage:  # a child: one stage, its figures as the last stdout line
        result = (stage_ingest(args.csv, args.work) if args.stage == "ingest"
                  else stage_report(args.csv, args.work, args.bucket_events) if args.stage == "report"
                  else stage_embed(args.csv, args.work, args.cf_solver) if args.stage == "embed"
                  else stage_tokenize(args.csv, args.work) if args.stage == "tokenize"
                  else stage_preprocess(args.csv, args.work, args.tag, args.bucket_events))
        print(json.dumps(result | {"peak_rss_gb": _peak_rss_gb()}))
        return

    sys.path.insert(0, str(HERE))
    from gen_taobao import generate

    args.work.mkdir(parents=True, exist_ok=True)
    csv = args.work / f"taobao_{args.events}.csv"
    generated = generate(csv, args.events, args.seed)
    common = ["--csv", str(csv), "--work", str(args.work)]
    try:
        ingest = _rate(_child(["--stage", "ingest", *common], args.threads))
        buckets = ["--bucket-events", str(args.bucket_events)] if args.bucket_events else []
        preprocess = _rate(_child(["--stage", "preprocess", *common, *buckets], args.threads))
        report = _rate(_child(["--stage", "report", *common, *buckets], args.threads))
        solver = ["--cf-solver", args.cf_solver] if args.cf_solver else []
        embed = _rate(_child(["--stage", "embed", *common, *solver], args.threads))
        tokenize = _rate(_child(["--stage", "tokenize", *common], args.threads))
        result = {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/bench_outofcore.py " + " ".join(sys.argv[1:]),
            "machine": {"cpus": os.cpu_count(), "polars_threads": args.threads, "platform": platform.platform(),
                        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)},
            "log": generated,
            "stages": {"ingest": ingest, "preprocess": preprocess, "dataset_report": report, "embed": embed,
                       "tokenize": tokenize},
            "ingest_plus_preprocess_seconds": round(ingest["seconds"] + preprocess["seconds"], 1),
            "embed_plus_tokenize_seconds": round(embed["seconds"] + tokenize["seconds"], 1),
            "peak_rss_gb": max(stage["peak_rss_gb"] for stage in (ingest, preprocess, report, embed, tokenize)),
        }
        result["targets"] = {"peak_rss_gb<=6": result["peak_rss_gb"] <= 6,
                             "ingest+preprocess<=600s": result["ingest_plus_preprocess_seconds"] <= 600}
        if args.compare_in_core:
            in_core = _child(["--stage", "preprocess", *common, "--tag", "in_core",
                              "--bucket-events", str(args.events * 2)], args.threads)
            result["in_core_preprocess"] = _rate(in_core)
            result["tables_equal_to_in_core"] = _equal(args.work)
    finally:
        if not args.keep_csv:
            csv.unlink(missing_ok=True)
        for name in ("events", "spill", "primary_buckets", "primary_in_core"):
            shutil.rmtree(args.work / name, ignore_errors=True)
        (args.work / "item_embeddings.npy").unlink(missing_ok=True)
    out = args.out or HERE / "results" / f"outofcore_{args.events}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ingest_plus_preprocess_seconds", "embed_plus_tokenize_seconds",
                                             "peak_rss_gb", "targets")}))


if __name__ == "__main__":
    main()
