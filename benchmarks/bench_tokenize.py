"""Benchmark the semantic-ID tokenizers against the reference's method, in one process.

    python benchmarks/bench_tokenize.py [--n 100000] [--dim 384] [--threads 2]
        [--out data/08_reporting/benchmarks/tokenize.json] [--scientific-emb PATH.npy]

1. RQ-KMeans, 3 levels × 256 codes: ours (``rqkmeans``: faiss k-means per level on
   residuals, training on at most 256 sampled points per centroid) against the
   reference's method (scikit-learn ``KMeans`` per level on residuals).  Both run the
   same number of Lloyd iterations; the JSON states every setting.  Reported: wall
   time, reconstruction error (mean squared residual norm) and ``ratio`` =
   baseline_seconds / ours_seconds (> 1: ours is faster).  Ours is also run on every
   point (no subsampling) to separate the sampling gain from the implementation.
2. RQ-VAE (default config): a short training run on the same data; items/s over the
   epochs without evaluation, and the collision rate of its argmin codes.

Data: N random unit vectors in ``dim`` dimensions (seeded), or the first N rows of
``--scientific-emb`` (e.g. item embeddings from the embed stage).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import sklearn
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout too

from seqrec_pipeline.models.tokenizers import (  # noqa: E402
    RQVAEConfig,
    collision_rate,
    rqkmeans,
    train_rqvae,
)

N_LEVELS, CODEBOOK = 3, 256


def load_data(args) -> tuple[np.ndarray, dict]:
    if args.scientific_emb:
        x = np.load(args.scientific_emb, mmap_mode="r")[: args.n]
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x, {"source": str(args.scientific_emb), "n": len(x), "dim": int(x.shape[1])}
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, {"source": "random unit vectors (gaussian, L2-normalised)", "n": args.n, "dim": args.dim}


def mean_sq(r: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", r, r, dtype=np.float64).mean())


def bench_ours(x: np.ndarray, args, max_points_per_centroid: int | None) -> dict:
    t0 = time.perf_counter()
    res = rqkmeans(
        x, N_LEVELS, CODEBOOK, seed=args.seed, niter=args.niter, max_points_per_centroid=max_points_per_centroid
    )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "reconstruction_mse": res.reconstruction_mse,
        "level_mse": res.level_mse,
        "unique_ratio": 1.0 - collision_rate(res.codes),
    }


def bench_sklearn(x: np.ndarray, args) -> dict:
    residual = x.copy()
    codes, level_mse, level_seconds = [], [], []
    t0 = time.perf_counter()
    for level in range(N_LEVELS):
        t = time.perf_counter()
        km = KMeans(
            n_clusters=CODEBOOK,
            init="k-means++",
            n_init=1,
            max_iter=args.niter,
            tol=0.0,
            algorithm="lloyd",
            random_state=args.seed + level,
        ).fit(residual)
        labels = km.labels_.astype(np.int64)
        residual -= km.cluster_centers_.astype(np.float32)[labels]
        codes.append(labels)
        level_mse.append(mean_sq(residual))
        level_seconds.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "level_seconds": level_seconds,
        "reconstruction_mse": level_mse[-1],
        "level_mse": level_mse,
        "unique_ratio": 1.0 - collision_rate(np.stack(codes, 1)),
    }


def bench_rqvae(x: np.ndarray, args) -> dict:
    # evaluate only after epoch 0 and the last one, so the middle epochs time pure training
    config = RQVAEConfig(epochs=args.rqvae_epochs, eval_every=10**9)
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = train_rqvae(
        x, config, seed=args.seed, device="cpu", progress=False, on_epoch=lambda e, m: stamps.append(time.perf_counter())
    )
    total = time.perf_counter() - t0
    train_epochs = len(stamps) - 2
    items_per_s = len(x) * train_epochs / (stamps[-2] - stamps[0]) if train_epochs > 0 else float("nan")
    last = result.history[-1]
    return {
        "config": config.to_dict() | {"in_dim": int(x.shape[1])},
        "epochs": args.rqvae_epochs,
        "total_seconds": total,
        "items_per_s": items_per_s,
        "items_per_s_epochs": f"epochs 1..{len(stamps) - 2} (no evaluation in them)",
        "final_collision_rate": last["collision_rate"],
        "best_collision_rate": result.best_collision_rate,
        "best_epoch": result.best_epoch,
        "final_recon_loss": last["recon_loss"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--out", type=Path, default=Path("data/08_reporting/benchmarks/tokenize.json"))
    p.add_argument("--scientific-emb", type=Path, default=None, help="a .npy [n_items, d] to use instead of random data")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads for faiss, torch and sklearn")
    p.add_argument("--niter", type=int, default=20, help="Lloyd iterations per level, both methods")
    p.add_argument("--rqvae-epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    x, data = load_data(args)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        # warm up both libraries (thread pools, BLAS) so neither pays first-call costs
        warm = x[: min(len(x), 2000)]
        rqkmeans(warm, 1, 16, niter=2)
        KMeans(n_clusters=16, n_init=1, max_iter=2).fit(warm)
        ours = bench_ours(x, args, max_points_per_centroid=256)
        print(f"ours rqkmeans       {ours['seconds']:.2f}s  mse {ours['reconstruction_mse']:.5f}", flush=True)
        ours_all = bench_ours(x, args, max_points_per_centroid=None)
        print(f"ours (all points)   {ours_all['seconds']:.2f}s  mse {ours_all['reconstruction_mse']:.5f}", flush=True)
        base = bench_sklearn(x, args)
        print(f"sklearn KMeans      {base['seconds']:.2f}s  mse {base['reconstruction_mse']:.5f}", flush=True)
        rqvae = bench_rqvae(x, args)
        print(f"rq-vae              {rqvae['items_per_s']:.0f} items/s  collisions {rqvae['final_collision_rate']:.4f}")

    report = {
        "benchmark": "tokenize",
        "ratio": base["seconds"] / ours["seconds"],
        "ratio_definition": "baseline_seconds / ours_seconds for 3 x 256 residual k-means (>1: ours faster)",
        "ratio_all_points": base["seconds"] / ours_all["seconds"],
        "data": data,
        "levels": N_LEVELS,
        "codebook_size": CODEBOOK,
        "reconstruction_mse_definition": "mean over items of ||x - sum of chosen centroids||^2",
        "ours": {
            "method": "seqrec_pipeline rqkmeans: faiss.Kmeans per level on residuals, exact assignment of all items",
            "settings": {"niter": args.niter, "init": "random (faiss default)", "nredo": 1,
                         "max_points_per_centroid": 256, "seed": args.seed},
            **ours,
        },
        "ours_all_points": {
            "method": "as ours, trained on every item (max_points_per_centroid=None)",
            **ours_all,
        },
        "baseline": {
            "method": "sklearn.cluster.KMeans per level on residuals (the reference's RQ-KMeans)",
            "settings": {"init": "k-means++", "n_init": 1, "max_iter": args.niter, "tol": 0.0,
                         "algorithm": "lloyd", "random_state": f"seed + level ({args.seed})"},
            "reference_settings_note": "the reference uses KMeans(max_iter=1000) (n_init='auto' = 1, tol=1e-4); "
                                       "iterations are equalised here so the ratio compares implementations",
            **base,
        },
        "rqvae": rqvae,
        "environment": {
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"ratio (sklearn / ours) = {report['ratio']:.2f}x; wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
