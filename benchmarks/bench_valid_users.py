"""What ``eval.valid_users`` saves: a rule fitted on the validation sessions of fewer users, same run.

For each cap (``--caps``; ``none`` = every protocol user, the baseline) the rule's whole fit-and-rank, what the
``smb_rule.rank_rule`` node runs (``rules.rule_ranking``: the validation set of at most that many users, the fit
on it, the ranking of the whole test session), is timed on a project's stored tables.  Reported per cap: seconds
and the ratio to the baseline, the validation NDCG@k the fit reached, the test session's NDCG@k (every protocol
user, as ``kedro compare``) and its paired difference to the baseline's lists with the 95 % interval, and the
share of test lists identical to the baseline's.

    kedro run --pipeline=smb_rule --params="dataset=beauty,model=item_knn"     # once, for the tables
    python benchmarks/bench_valid_users.py --project . --dataset beauty --caps none 10000 5000 2000

Run it on an idle machine with one thread (``OMP_NUM_THREADS=1``); results go to
``benchmarks/results/valid_users_<dataset>_<rule>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repeat_headroom import catalog_of  # noqa: E402

from seqrec_pipeline.params import EmbedParams, EvalParams, RepeatParams, validate  # noqa: E402
from seqrec_pipeline.ranking.metrics import per_sample_metrics  # noqa: E402
from seqrec_pipeline.ranking.rules import rule_ranking  # noqa: E402
from seqrec_pipeline.reporting.comparison import Z95  # noqa: E402
from seqrec_pipeline.splits import check_protocol, eval_set, protocol_users  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--rule", default="item_knn", choices=["item_knn", "tifu"])
    parser.add_argument("--protocol", default="last_session")
    parser.add_argument("--caps", nargs="+", default=["none", "10000", "5000", "2000"])
    args = parser.parse_args()
    catalog, params = catalog_of(args.project.resolve(), {"dataset": args.dataset})
    sequences, items, behaviors = catalog.load("sequences@eager"), catalog.load("items"), catalog.load("behaviors")
    protocol, max_history = check_protocol(args.protocol), params["max_history"]
    ranked = validate(EvalParams, params["eval"], prefix="eval.")
    grid, embed = validate(RepeatParams, params["repeat"], prefix="repeat."), validate(EmbedParams, params["embed"],
                                                                                        prefix="embed.")
    test = eval_set(sequences, protocol, "test", max_history)
    caps = [None if c == "none" else int(c) for c in args.caps]
    if caps[0] is not None:
        raise SystemExit("the first cap is the baseline: none (every user)")
    rows, base = [], None
    for cap in caps:
        start = time.perf_counter()
        valid = eval_set(sequences, protocol, "valid", max_history, max_users=cap)
        ranking, fitted = rule_ranking(args.rule, sequences, valid, test, items.height, behaviors.height, protocol,
                                       grid, window=embed.cf_window, chunk_events=embed.cf_chunk_events,
                                       k=ranked.k)
        seconds = time.perf_counter() - start
        ndcg = per_sample_metrics(ranking.items, test.targets, ks=(ranked.k,))[f"ndcg@{ranked.k}"]
        validation = fitted.get("validation", {}).get(f"ndcg@{ranked.k}", fitted.get(f"valid_ndcg@{ranked.k}"))
        row = {"valid_users": cap, "valid_users_ranked": len(valid.user_idx), "seconds": round(seconds, 1),
               "validation_ndcg": validation, "test_ndcg": round(float(ndcg.mean()), 4)}
        if base is None:
            base = (seconds, ndcg, ranking.items)
        else:
            diff = ndcg - base[1]
            row |= {"time_ratio_to_all": round(seconds / base[0], 3),
                    "test_ndcg_minus_all": round(float(diff.mean()), 4),
                    "test_ndcg_minus_all_95": round(float(Z95 * diff.std(ddof=1) / np.sqrt(len(diff))), 4),
                    "identical_lists": round(float((ranking.items == base[2]).all(1).mean()), 4)}
        rows.append(row)
        print(json.dumps(row))
    out = {
        "benchmark": "bench_valid_users", "dataset": args.dataset, "rule": args.rule, "protocol": protocol,
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.processor() or
        platform.machine(), "protocol_users": protocol_users(sequences, protocol).height,
        "test_samples": test.n_samples, "k": ranked.k,
        "baseline": {"name": "every protocol user's validation session (eval.valid_users: null)"}, "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"valid_users_{args.dataset}_{args.rule}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
