"""ARPACK against the randomized SVD on the same PPMI matrix: singular values, validation probe, time.

    python benchmarks/bench_cf_solvers.py --dataset retailrocket --raw ../shared/data/retailrocket
    python benchmarks/bench_cf_solvers.py --dataset taobao --raw ../shared/data/taobao_head
    python benchmarks/bench_cf_solvers.py --dataset taobao --generate 10000000 --work /tmp/cf_solvers

Builds the primary tables (ingest + preprocess as the pipeline does; ``--generate N`` first writes a synthetic
Taobao-layout log of N events with ``gen_taobao.py`` into ``--work``, deleted afterwards), then, with the
dataset's ``embed`` parameters: the PPMI matrix once, ``svds`` (float64) and ``randomized_svd`` (float32) on
it, the relative error of the randomized singular values against ARPACK's, and ``probe_ndcg`` (the validation
probe ``embed`` uses to choose vectors) of the vectors of each solver.  JSON to
``benchmarks/results/cf_solvers_<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def primary_tables(dataset: str, raw: Path, work: Path):
    from seqrec_pipeline.data.ingest import ingest_events
    from seqrec_pipeline.data.preprocess import build_primary
    from seqrec_pipeline.dataset_spec import resolve_dataset
    from seqrec_pipeline.io.parquet import ParquetParts
    from seqrec_pipeline.params import load_parameters

    params = load_parameters({"dataset": dataset}, project=ROOT)
    spec = resolve_dataset(dataset, params.datasets)
    where = {"path": str(raw.parent), "events": raw.name} if raw.is_file() else {"path": str(raw)}
    spec = spec.model_copy(update=where)
    parts = ParquetParts(work / "events")
    parts.clear()
    _, _, levels = ingest_events(spec, params.data.batch_rows, parts)
    return build_primary(parts.scan(), levels, spec.filters, spec.session_gap_minutes,
                         bucket_events=params.data.bucket_events, batch_rows=params.data.batch_rows,
                         work_dir=work / "spill")


def compare(dataset: str, sequences, n_items: int) -> dict:
    from scipy.sparse.linalg import svds

    from seqrec_pipeline.data.embeddings import (ppmi_matrix, _training_events, cf_embeddings, probe_ndcg,
                                                 randomized_svd)
    from seqrec_pipeline.params import load_parameters

    params = load_parameters({"dataset": dataset}, project=ROOT)
    embed, seed = params.embed, params.seed
    users, items = _training_events(sequences)
    matrix = ppmi_matrix(users, items, n_items, embed.cf_window, embed.cf_chunk_events, np.float64)
    del users, items
    out = {"n_items": n_items, "nnz": int(matrix.nnz), "k": embed.cf_dim, "oversample": embed.cf_oversample,
           "power_iters": embed.cf_power_iters}
    t0 = time.perf_counter()
    exact = svds(matrix, k=embed.cf_dim, v0=np.random.default_rng(seed).standard_normal(n_items))[1]
    out["arpack_seconds"] = round(time.perf_counter() - t0, 1)
    matrix = matrix.astype(np.float32)
    t0 = time.perf_counter()
    approx = randomized_svd(matrix, embed.cf_dim, embed.cf_oversample, embed.cf_power_iters, seed)[1]
    out["randomized_seconds"] = round(time.perf_counter() - t0, 1)
    del matrix
    exact = np.sort(exact)[::-1]
    error = np.abs(approx - exact) / exact
    out |= {"rel_error_top10_max": float(error[:10].max()), "rel_error_max": float(error.max()),
            "rel_error_mean": float(error.mean()), "s_first_last_arpack": [float(exact[0]), float(exact[-1])],
            "s_first_last_randomized": [float(approx[0]), float(approx[-1])]}
    for solver in ("arpack", "randomized"):
        vectors = cf_embeddings(sequences, n_items, embed.cf_dim, seed, embed.model_copy(update={"cf_solver": solver}))
        out[f"probe_ndcg@10_{solver}"] = probe_ndcg(vectors, sequences, seed=seed, slice_events=embed.cf_chunk_events)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="a dataset name of the parameters (its spec and embed settings)")
    ap.add_argument("--raw", type=Path, help="the raw events: the dataset's folder or file")
    ap.add_argument("--generate", type=int, help="events of a synthetic Taobao-layout log instead of --raw")
    ap.add_argument("--work", type=Path, default=Path("/tmp/seqrec_cf_solvers"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if (args.raw is None) == (args.generate is None):
        raise SystemExit("give exactly one of --raw and --generate")
    args.work.mkdir(parents=True, exist_ok=True)
    raw, name = args.raw, args.dataset
    try:
        if args.generate:
            sys.path.insert(0, str(HERE))
            from gen_taobao import generate

            raw, name = args.work / f"generated_{args.generate}.csv", f"generated_{args.generate}"
            generate(raw, args.generate, 0)
        primary = primary_tables(args.dataset, raw, args.work)
        result = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "command": "python benchmarks/bench_cf_solvers.py " + " ".join(sys.argv[1:]), "data": name,
                  "n_events": int(primary.sequences["n_events"].sum())}
        result |= compare(args.dataset, primary.sequences, primary.items.height)
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)
    finally:
        if args.generate:
            (args.work / f"generated_{args.generate}.csv").unlink(missing_ok=True)
        for folder in ("events", "spill"):
            shutil.rmtree(args.work / folder, ignore_errors=True)
    out = args.out or HERE / "results" / f"cf_solvers_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
