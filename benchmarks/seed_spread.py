"""How much of a difference between two runs is the training seed: the same two runs in several projects that
differ only in ``seed``.

    kedro run --pipeline=smb_decoder --params="dataset=retailrocket,seed=1"        # in project seed1, then 2, ...
    kedro run --pipeline=smb_rec --params="dataset=retailrocket,model=sasrec_behavior,seed=1"
    python benchmarks/seed_spread.py --dataset retailrocket --projects seed1 seed2 seed42 \\
        --runs smb_decoder/gamer-rqkmeans+repeat smb_rec/last_session/sasrec_behavior+repeat

The paired intervals of ``kedro compare`` are over test samples for one trained model each; a second seed
retrains both models and moves both figures.  For every project: each run's merged NDCG@k (its newest
predictions) and the paired difference first − second with its 95 % interval over the samples; then over the
projects: mean and standard deviation of each run's figure, the mean of the per-seed differences, and the
paired difference of the seed-averaged per-sample NDCG (each sample's NDCG averaged over the seeds, then the
interval over samples).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from seqrec_pipeline.reporting.comparison import KEYS, Z95, per_sample_ndcg


def newest_predictions(project: Path, dataset: str, run: str) -> pl.DataFrame:
    folder = project / "data" / "07_model_output" / dataset / run / "predictions.parquet"
    versions = sorted(folder.glob("*/predictions.parquet"))
    if not versions:
        raise SystemExit(f"no predictions under {folder}: run the pipeline in that project first")
    return pl.read_parquet(versions[-1])


def paired(a: np.ndarray, b: np.ndarray) -> str:
    d = a - b
    return f"{d.mean():+.4f} ± {Z95 * d.std(ddof=1) / np.sqrt(len(d)):.4f}"


def run_ndcg(project: Path, dataset: str, runs: list[str], k: int) -> tuple[pl.DataFrame, list[np.ndarray]]:
    """The samples (``KEYS``) and each run's per-sample NDCG@k in one project, the same samples in the same order."""
    tables = [per_sample_ndcg(newest_predictions(project, dataset, run), k).sort(KEYS) for run in runs]
    if not all(t.select(KEYS).equals(tables[0].select(KEYS)) for t in tables[1:]):
        raise SystemExit(f"{project}: the runs rank different samples")
    return tables[0].select(KEYS), [t["ndcg"].to_numpy() for t in tables]


def spread_rows(names: list[str], per_seed: list[tuple[np.ndarray, np.ndarray]]) -> list[list[str]]:
    """Markdown rows: one per seed (both figures, paired Δ), the mean over seeds, the seed-averaged samples."""
    rows = [[name, f"{a.mean():.4f}", f"{b.mean():.4f}", paired(a, b)] for name, (a, b) in zip(names, per_seed)]
    first = np.array([a.mean() for a, _ in per_seed])
    second = np.array([b.mean() for _, b in per_seed])
    sd = (lambda v: f" (sd {v.std(ddof=1):.4f})") if len(per_seed) > 1 else (lambda v: "")
    rows.append([f"mean over {len(per_seed)} seeds", f"{first.mean():.4f}{sd(first)}", f"{second.mean():.4f}{sd(second)}",
                 f"{(first - second).mean():+.4f}; first ahead in {int((first > second).sum())} of {len(per_seed)}"])
    a, b = np.mean([a for a, _ in per_seed], axis=0), np.mean([b for _, b in per_seed], axis=0)
    rows.append(["seed-averaged per sample", f"{a.mean():.4f}", f"{b.mean():.4f}", paired(a, b)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--projects", nargs="+", type=Path, required=True, help="one project folder per seed")
    parser.add_argument("--runs", nargs=2, required=True, metavar=("FIRST", "SECOND"),
                        help="run folders under data/07_model_output/<dataset>/, e.g. smb_decoder/gamer-rqkmeans+repeat")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    keys, per_seed = None, []
    for project in args.projects:
        samples, (a, b) = run_ndcg(project, args.dataset, args.runs, args.k)
        if keys is not None and not keys.equals(samples):
            raise SystemExit(f"{project}: other test samples than {args.projects[0]} (another split?)")
        keys = samples
        per_seed.append((a, b))
    print(f"| project | {args.runs[0]} | {args.runs[1]} | paired Δ (first − second) |")
    print("|---|---|---|---|")
    for row in spread_rows([p.name for p in args.projects], per_seed):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
