"""Benchmark the semantic-ID tokenizers against the reference's method, in one process.

    python benchmarks/bench_tokenize.py [--n 100000] [--dim 384] [--threads 1] [--check-seeds 1 2]
        [--out data/08_reporting/benchmarks/tokenize.json] [--scientific-emb PATH.npy]

1. RQ-KMeans, 3 levels x 256 codes, on N random unit vectors (headline) and on the
   scientific item embeddings (MiniLM vectors written by the embed stage) when present.
   Ours (``rqkmeans`` with the pipeline's settings: per level faiss k-means on a sample, then
   Lloyd iterations on all items in bf16 where the CPU has it natively, the last partition's
   means as centroids; then exact fp32 joint refinement sweeps and the collision-aware last level) against the
   reference's method exactly: ``sklearn.KMeans(n_clusters=256, max_iter=1000)`` per
   level on residuals, sklearn defaults otherwise (k-means++, n_init='auto' = 1,
   tol=1e-4; ``random_state = seed + level`` for reproducibility), iteration counts
   recorded.  Reported: wall time, reconstruction error (mean squared residual after
   the last level), unique-code ratio and ``ratio`` = baseline_seconds / ours_seconds on
   the random vectors (> 1: ours is faster), valid only with ours' error <= baseline's.
   Both sides include their collision step, as each writes its SID table: ours the
   collision-aware last level, the reference its Sinkhorn rounds on the last level
   (docs/design.md#collisions).  ``ratio_plain_last_level`` compares the k-means parts alone.
   Both sides run on ``--threads`` threads (default 1: the machine is shared).
   Also on the random vectors: ours with ``precision="fp32"`` (what a CPU without native bf16 runs) and the
   previous default (12 faiss iterations per level on all items, 2 sweeps).
   ``--check-seeds`` repeats the random-vector comparison (ours with the default settings and in fp32, and
   the baseline) on new data for each extra seed, so one draw's luck does not make the headline.
2. Scientific collisions: unique ratio and error with and without the collision-aware
   last level (``balance_last_level``).
3. RQ-VAE (default config): a short training run on the random data; items/s over the
   epochs without evaluation, and the collision rate of its argmin codes.
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
    resolve_collisions,
    rqkmeans,
    train_rqvae,
)

N_LEVELS, CODEBOOK = 3, 256
SCIENTIFIC_GLOB = "data/04_feature/scientific/item_embeddings.npy/*/item_embeddings.npy"
# ours: the pipeline's settings (conf/base/parameters.yml tokenizers.rqkmeans)
OURS = {"sample_iters": 8, "sample_points_per_centroid": 64, "full_iters": 10, "precision": "auto",
        "init": "random", "refine_iters": 2}
FP32 = OURS | {"precision": "fp32"}
# the default before the sample + bf16 steps: 12 faiss iterations per level on all items, then 2 sweeps
PREVIOUS = {"sample_iters": 12, "sample_points_per_centroid": 10**9, "full_iters": 0, "init": "random",
            "refine_iters": 2}


def random_data(args) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, {"source": "random unit vectors (gaussian, L2-normalised)", "n": args.n, "dim": args.dim}


def scientific_data(args) -> tuple[np.ndarray, dict] | None:
    path = args.scientific_emb
    if path is None:
        found = sorted(Path().glob(SCIENTIFIC_GLOB))
        path = found[-1] if found else None
    if path is None or not Path(path).exists():
        return None
    x = np.ascontiguousarray(np.load(path), dtype=np.float32)
    return x, {"source": str(path), "n": len(x), "dim": int(x.shape[1])}


def mean_sq(r: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", r, r, dtype=np.float64).mean())


def bench_ours(x: np.ndarray, args, **settings) -> dict:
    t0 = time.perf_counter()
    res = rqkmeans(x, N_LEVELS, CODEBOOK, seed=args.seed, n_threads=args.threads, **settings)
    seconds = time.perf_counter() - t0
    _, stats = resolve_collisions(res.codes, res.level_sizes)
    return {
        "settings": settings | {"seed": args.seed},
        "seconds": seconds,
        "reconstruction_mse": res.reconstruction_mse,
        "level_mse": res.level_mse,
        "precision_used": res.precision,
        "unique_ratio": stats["unique_ratio"],
        "max_group_size": stats["max_group_size"],
    }


def reference_sinkhorn(distances: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """The reference's (LETTER's) Sinkhorn: distances centred/scaled to [-1, 1], float64, uniform marginals."""
    middle = (distances.max() + distances.min()) / 2
    amplitude = distances.max() - middle + 1e-5
    q = torch.exp(-((distances - middle) / amplitude) / epsilon)
    n_rows, n_cols = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= n_rows
        q /= q.sum(dim=0, keepdim=True)
        q /= n_cols
    return q * n_rows


def reference_collision_rounds(codes: np.ndarray, target: np.ndarray, centroids: np.ndarray,
                               rounds: int = 20, epsilon: float = 0.003, iterations: int = 50) -> tuple[np.ndarray, int]:
    """The reference's RQ-KMeans collision step (github.com/wzf2000/GAMER): up to 20 rounds; each round groups
    items by full code and re-encodes every colliding group's LAST code by Sinkhorn between the group's last-level
    residuals and the last-level centres (one group at a time, as the reference).  Centres are not updated."""
    codes = codes.copy()
    centres = torch.from_numpy(centroids.astype(np.float64))
    used = 0
    for used in range(1, rounds + 1):
        _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
        group = group.reshape(-1)
        order = np.argsort(group, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        colliding = np.flatnonzero(counts > 1)
        if len(colliding) == 0:
            return codes, used - 1
        for g in colliding:
            members = order[starts[g]:starts[g] + counts[g]]
            d = torch.cdist(torch.from_numpy(target[members].astype(np.float64)), centres).square()
            codes[members, -1] = reference_sinkhorn(d, epsilon, iterations).argmax(dim=1).numpy()
    return codes, used


def bench_sklearn(x: np.ndarray, args) -> dict:
    residual = x.copy()
    codes, level_mse, level_seconds, n_iter, centres = [], [], [], [], []
    t0 = time.perf_counter()
    for level in range(N_LEVELS):
        t = time.perf_counter()
        km = KMeans(n_clusters=CODEBOOK, max_iter=1000, random_state=args.seed + level).fit(residual)
        labels = km.labels_.astype(np.int64)
        centres.append(km.cluster_centers_.astype(np.float32))
        residual -= centres[-1][labels]
        codes.append(labels)
        n_iter.append(int(km.n_iter_))
        level_mse.append(mean_sq(residual))
        level_seconds.append(time.perf_counter() - t)
    kmeans_seconds = time.perf_counter() - t0
    plain_codes = np.stack(codes, 1)
    _, plain_stats = resolve_collisions(plain_codes, (CODEBOOK,) * N_LEVELS)
    # The reference then spreads colliding items over last-level codes (Sinkhorn rounds).
    t = time.perf_counter()
    last_target = residual + centres[-1][plain_codes[:, -1]]
    spread, rounds = reference_collision_rounds(plain_codes, last_target, centres[-1])
    collision_seconds = time.perf_counter() - t
    _, stats = resolve_collisions(spread, (CODEBOOK,) * N_LEVELS)
    return {
        "method": "sklearn.cluster.KMeans per level on residuals, then the reference's Sinkhorn collision rounds "
                  "on the last level (the reference's RQ-KMeans, github.com/wzf2000/GAMER)",
        "settings": {"n_clusters": CODEBOOK, "max_iter": 1000, "init": "k-means++ (default)",
                     "n_init": "'auto' (default; = 1 with k-means++)", "tol": "1e-4 (default)",
                     "algorithm": "lloyd (default)", "random_state": f"seed + level ({args.seed})",
                     "collision_rounds": "<= 20, Sinkhorn epsilon 0.003, 50 float64 iterations, per group"},
        "seconds": kmeans_seconds + collision_seconds,
        "kmeans_seconds": kmeans_seconds,
        "collision_seconds": collision_seconds,
        "collision_rounds_run": rounds,
        "level_seconds": level_seconds,
        "iterations": n_iter,
        "reconstruction_mse": mean_sq(last_target - centres[-1][spread[:, -1]]),
        "unique_ratio": stats["unique_ratio"],
        "max_group_size": stats["max_group_size"],
        "kmeans_only": {"seconds": kmeans_seconds, "reconstruction_mse": level_mse[-1], "level_mse": level_mse,
                        "unique_ratio": plain_stats["unique_ratio"], "max_group_size": plain_stats["max_group_size"]},
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


def compare(x: np.ndarray, data: dict, args, previous: bool) -> dict:
    ours = bench_ours(x, args, **OURS, balance_last_level=True)
    print(f"  ours rqkmeans         {ours['seconds']:.2f}s  mse {ours['reconstruction_mse']:.5f}  "
          f"unique {ours['unique_ratio']:.4f}", flush=True)
    plain = bench_ours(x, args, **OURS, balance_last_level=False)
    print(f"  ours, plain last level {plain['seconds']:.2f}s  mse {plain['reconstruction_mse']:.5f}  "
          f"unique {plain['unique_ratio']:.4f}", flush=True)
    entry = {"data": data, "ours": ours, "ours_plain_last_level": plain}
    if previous:  # the random-vector headline: also in fp32, and the previous default
        fp32 = entry["ours_fp32"] = bench_ours(x, args, **FP32, balance_last_level=True)
        print(f"  ours, precision=fp32  {fp32['seconds']:.2f}s  mse {fp32['reconstruction_mse']:.5f}", flush=True)
        prev = entry["ours_previous_settings"] = bench_ours(x, args, **PREVIOUS, balance_last_level=True)
        print(f"  ours, previous default {prev['seconds']:.2f}s  mse {prev['reconstruction_mse']:.5f}", flush=True)
    base = bench_sklearn(x, args)
    plain_base = base["kmeans_only"]
    print(f"  sklearn KMeans (ref.)  {plain_base['seconds']:.2f}s  mse {plain_base['reconstruction_mse']:.5f}  "
          f"unique {plain_base['unique_ratio']:.4f}  iterations {base['iterations']}", flush=True)
    print(f"  + Sinkhorn rounds      {base['seconds']:.2f}s  mse {base['reconstruction_mse']:.5f}  "
          f"unique {base['unique_ratio']:.4f}  ({base['collision_rounds_run']} rounds)", flush=True)
    entry["baseline"] = base
    # Headline: both sides with their collision step (what each writes as the SID table).
    entry["ratio"] = base["seconds"] / ours["seconds"]
    entry["ours_error_le_baseline"] = bool(ours["reconstruction_mse"] <= base["reconstruction_mse"])
    # Without collision steps on either side: k-means objective only.
    entry["ratio_plain_last_level"] = plain_base["seconds"] / plain["seconds"]
    entry["plain_error_le_baseline"] = bool(plain["reconstruction_mse"] <= plain_base["reconstruction_mse"])
    if previous:
        for name in ("fp32", "previous_settings"):
            entry[f"ratio_{name}"] = base["seconds"] / entry[f"ours_{name}"]["seconds"]
            entry[f"{name}_error_le_baseline"] = bool(
                entry[f"ours_{name}"]["reconstruction_mse"] <= base["reconstruction_mse"])
    return entry


def seed_check(args) -> list[dict]:
    """The random-vector comparison again for other seeds (new data, new initialisations on both sides), so
    the headline does not rest on one draw."""
    rows = []
    for seed in args.check_seeds:
        a = argparse.Namespace(**{**vars(args), "seed": seed})
        x, _ = random_data(a)
        base = bench_sklearn(x, a)
        row = {"seed": seed, "baseline_seconds": base["seconds"], "baseline_mse": base["reconstruction_mse"]}
        for name, settings in (("ours", OURS), ("fp32", FP32)):
            ours = bench_ours(x, a, **settings, balance_last_level=True)
            row |= {f"{name}_seconds": ours["seconds"], f"{name}_ratio": base["seconds"] / ours["seconds"],
                    f"{name}_mse": ours["reconstruction_mse"],
                    f"{name}_error_le_baseline": bool(ours["reconstruction_mse"] <= base["reconstruction_mse"])}
            print(f"  seed {seed} {name:16s} {ours['seconds']:.2f}s mse {ours['reconstruction_mse']:.6f} | sklearn "
                  f"{base['seconds']:.2f}s mse {base['reconstruction_mse']:.6f} | ratio {row[f'{name}_ratio']:.2f}",
                  flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--out", type=Path, default=Path("data/08_reporting/benchmarks/tokenize.json"))
    p.add_argument("--scientific-emb", type=Path, default=None,
                   help=f"item embeddings .npy (default: newest {SCIENTIFIC_GLOB}, skipped when absent)")
    p.add_argument("--threads", type=int, default=1, help="threads for faiss, torch and sklearn/BLAS (both sides)")
    p.add_argument("--rqvae-epochs", type=int, default=4, help="0 skips the RQ-VAE run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-seeds", type=int, nargs="*", default=[],
                   help="repeat the random-vector comparison (ours + baseline) for these extra seeds")
    args = p.parse_args(argv)

    x, data = random_data(args)
    sci = scientific_data(args)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        # warm up both libraries (thread pools, BLAS) so neither pays first-call costs
        warm = x[: min(len(x), 2000)]
        rqkmeans(warm, 1, 16, sample_iters=2, full_iters=1, precision="bf16")
        KMeans(n_clusters=16, n_init=1, max_iter=2).fit(warm)
        print(f"random {data['n']} x {data['dim']}", flush=True)
        random_entry = compare(x, data, args, previous=True)
        if args.check_seeds:
            random_entry["seed_check"] = seed_check(args)
        sci_entry = None
        if sci is not None:
            print(f"scientific {sci[1]['n']} x {sci[1]['dim']}", flush=True)
            sci_entry = compare(sci[0], sci[1], args, previous=False)
        rqvae = bench_rqvae(x, args) if args.rqvae_epochs > 0 else None
        if rqvae:
            print(f"rq-vae  {rqvae['items_per_s']:.0f} items/s  collisions {rqvae['final_collision_rate']:.4f}")

    report = {
        "benchmark": "tokenize",
        "ratio": random_entry["ratio"],
        "ratio_definition": "random vectors: baseline_seconds / ours_seconds for 3 x 256 residual k-means "
                            "(>1: ours faster); valid with ours_error_le_baseline",
        "ours_error_le_baseline": random_entry["ours_error_le_baseline"],
        "threads": args.threads,
        "threads_note": "faiss, BLAS (threadpoolctl) and torch limited to this many threads on both sides",
        "levels": N_LEVELS,
        "codebook_size": CODEBOOK,
        "reconstruction_mse_definition": "mean over items of ||x - sum of chosen centroids||^2 (after the last level)",
        "unique_ratio_definition": "distinct full codes / items, before the disambiguation level",
        "ours_method": "seqrec_pipeline rqkmeans: per level faiss.Kmeans (random init, sample_iters Lloyd "
                       "iterations) on k x sample_points_per_centroid sampled residuals, full_iters Lloyd "
                       "iterations on all items (distances in `precision`; auto = bf16 on CPUs with native bf16), "
                       "the last partition's means as centroids; then refine_iters sweeps of joint refinement "
                       "(per level: exact "
                       "fp32 re-assignment + mean update against x minus the other levels), then the "
                       "collision-aware last level (balance_last_level) unless stated",
        "datasets": {"random": random_entry, "scientific": sci_entry},
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
    print(f"ratio (sklearn / ours) = {report['ratio']:.2f}x (error <= baseline: {report['ours_error_le_baseline']}); "
          f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
