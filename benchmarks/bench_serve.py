"""Serving benchmark: batch recommendations and the MLflow model against the evaluation path, same run.

- **batch**: ``serving.recommend_users`` (what ``kedro run --pipeline=recommend`` calls) for every user, every
  behavior, k=10, with the repeat head; queries/s = (user, behavior) lists per second.
- **baseline**: the evaluation path on the same users: the ``smb_decoder`` evaluation nodes ``rank_decoder``
  (test split) + ``rank_repeat_aware``, i.e. the same beam search and mixture with the evaluation's data
  preparation and predictions table; queries/s = test samples per second.
- ``--kind item_knn``: the same for the served ``item_knn`` rule (its PPMI explorer counted on the whole log, its
  fitted mixture); baseline: the rule's evaluation ranking with the same fitted mixture (``ItemKnn.rank`` of the
  test windows + ``rank_repeat_aware``), fitting excluded on both sides.
- **pyfunc**: the MLflow model (``mlflow.pyfunc.save_model`` of the same recommender, loaded back with
  ``mlflow.pyfunc.load_model``): latency of one request (``--history`` events, k=10, every behavior), p50 / p99
  over ``--repeats`` calls, and requests/s for batches of 64 requests.  Its lists are checked against the batch
  output for the same users (``pyfunc_batch_identical_share``).

Data: a stored run (``--project`` with ``--dataset/--model/--tokenizer``: its newest model, SID table, tables
and repeat head) or, by default, a random-init ``cpu-small`` gamer on a synthetic log (speed does not depend on
the weights): ``--users`` users of ``--history`` events in sessions of 5 (the last two are the evaluation's
validation and test sessions), ``--items`` items with
3-level codes of 256, 3 behaviors, beam 20.

    python benchmarks/bench_serve.py                              # about a minute on 2 CPU cores
    python benchmarks/bench_serve.py --project /path/to/project --dataset ml-100k
    python benchmarks/bench_serve.py --kind item_knn --project /path/to/project --dataset retailrocket
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import random_bijective_codes  # noqa: E402

from seqrec_pipeline.models.generative import build_model, load_model  # noqa: E402
from seqrec_pipeline.params import load_parameters  # noqa: E402
from seqrec_pipeline.pipelines.evaluation.nodes import rank_decoder, rank_repeat_aware  # noqa: E402
from seqrec_pipeline.ranking.repeat import Mixture, RepeatScorer  # noqa: E402
from seqrec_pipeline.ranking.rules import ITEM_KNN_BLOCK, ItemKnn  # noqa: E402
from seqrec_pipeline.reporting.evaluation import predictions_table  # noqa: E402
from seqrec_pipeline.serving import build_recommender, recommend_users  # noqa: E402
from seqrec_pipeline.splits import eval_set, events_before, training_prefix  # noqa: E402
from seqrec_pipeline.vocab import TokenVocab  # noqa: E402

DEFAULT_OUT = "data/08_reporting/benchmarks/serve.json"
NAMES = ("view", "cart", "buy")


def synthetic(args) -> dict:
    """A random model and log of the shape described in the module docstring."""
    rng = np.random.default_rng(args.seed)
    n = args.history
    times = 1_700_000_000 + np.cumsum(np.where(np.arange(n) % 5 == 0, 7200, 60))
    items = np.minimum(rng.zipf(1.3, (args.users, n)) - 1, args.items - 1)
    sequences = pl.DataFrame({
        "user_idx": np.arange(args.users, dtype=np.int32),
        "item": items.astype(np.int32).tolist(), "behavior": rng.choice(3, (args.users, n), p=[.8, .15, .05]).tolist(),
        "timestamp": np.tile(times, (args.users, 1)).tolist(), "session": np.tile(np.arange(n) // 5, (args.users, 1)).tolist(),
        "n_events": np.full(args.users, n, dtype=np.int32),
        "last_session_valid": np.full(args.users, n - 10, dtype=np.int32),
        "last_session_test": np.full(args.users, n - 5, dtype=np.int32),
    }, schema_overrides={"behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)})
    vocab = TokenVocab(NAMES, (256, 256, 256))
    codes = random_bijective_codes(args.items, vocab.level_sizes, args.seed)
    torch.manual_seed(args.seed)
    head = Mixture(RepeatScorer([[1.0, 2.0, 4.0]] * 3, 0.9, 0.8), [0.0] * 3, [0.5] * 3, [1.0] * 3).to_dict()
    if args.kind == "item_knn":  # the explorer of the repeat parameters' defaults
        grid, window = load_parameters().repeat, load_parameters().embed.cf_window
        head["explorer"] = {"window": window, "width": grid.candidates, "last": grid.cooccurrence_items,
                            "decay": grid.cooccurrence_decay}
    return {
        "model": build_model("gamer", vocab, "cpu-small").eval() if args.kind == "decoder" else None,
        "sequences": sequences,
        "users": pl.DataFrame({"user_idx": np.arange(args.users, dtype=np.int32),
                               "user_id": [f"u{u}" for u in range(args.users)]}),
        "items": pl.DataFrame({"item_idx": np.arange(args.items, dtype=np.int32),
                               "item_id": [f"i{i}" for i in range(args.items)]}),
        "behaviors": pl.DataFrame({"behavior_idx": [0, 1, 2], "behavior": list(NAMES), "level": [0, 1, 2]}),
        "sid_table": pl.DataFrame({"item_idx": np.arange(args.items, dtype=np.int32),
                                   **{f"c{i}": codes[:, i].astype(np.int32) for i in range(3)}}),
        "sid_vocab": vocab.to_dict(), "repeat_head": head,
        "setting": "synthetic, random-init cpu-small gamer" if args.kind == "decoder" else "synthetic, item_knn",
    }


def stored(args) -> dict:
    """The newest artifacts of a run in a project folder."""
    root, d = Path(args.project), args.dataset

    def table(path):
        return pl.read_parquet(sorted(glob.glob(str(root / "data" / path / "*" / Path(path).name)))[-1])

    tables = {"sequences": table(f"03_primary/{d}/sequences.parquet"), "users": table(f"03_primary/{d}/users.parquet"),
              "items": table(f"03_primary/{d}/items.parquet"), "behaviors": table(f"03_primary/{d}/behaviors.parquet")}
    if args.kind == "item_knn":  # what the newest smb_rule run of item_knn fitted
        fitted = root / f"data/06_models/{d}/rule-item_knn/last_session/fitted.json"
        return tables | {"model": None, "sid_table": None, "sid_vocab": None,
                         "repeat_head": json.loads(fitted.read_text()), "setting": f"{root.name}: {d} item_knn"}
    variant = f"{args.model}-{args.tokenizer}"
    head = root / f"data/08_reporting/{d}/smb_decoder/{variant}+repeat/repeat_head.json"
    model_dir = sorted(glob.glob(str(root / f"data/06_models/{d}/{variant}/model/*/model")))[-1]
    return tables | {
        "model": load_model(model_dir),
        "sid_table": table(f"05_model_input/{d}/{args.tokenizer}/sid_table.parquet"),
        "sid_vocab": json.loads((root / f"data/05_model_input/{d}/{args.tokenizer}/sid_vocab.json").read_text()),
        "repeat_head": json.loads(head.read_text()) if head.is_file() else None, "setting": f"{root.name}: {d} {variant}",
    }


def request_of(rec, sequences: pl.DataFrame, row: int, history: int | None = None) -> dict:
    """Row ``row``'s last ``history`` events (default: its whole log) as a request of raw ids."""
    r = sequences.row(row, named=True)
    cut = slice(max(len(r["item"]) - history, 0) if history else 0, None)
    return {"items": rec.item_ids[r["item"][cut]].tolist(), "behaviors": [rec.behaviors.names[b] for b in r["behavior"][cut]],
            "timestamps": [int(t) for t in r["timestamp"][cut]], "k": 10}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project"), parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="gamer"), parser.add_argument("--tokenizer", default="rqkmeans")
    parser.add_argument("--users", type=int, default=256), parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=50), parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=50), parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=("decoder", "item_knn"), default="decoder")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    run = stored(args) if args.project else synthetic(args)
    seq, protocol = run["sequences"], "last_session"
    if args.project:  # the users the evaluation ranks, so both paths see the same people
        seq = seq.filter(pl.col("last_session_test") >= 0).head(args.users)
    # the co-occurrence counts' chunking: the project's (this repository's for the synthetic run)
    embed = load_parameters(project=args.project or Path(__file__).resolve().parents[1]).embed
    ranker, ranking = run["model"], dict(beam_size=args.beam, batch_size=16)
    if args.kind == "item_knn":  # served: counted on the whole log; evaluated: on the training events
        settings = dict(**run["repeat_head"]["explorer"], chunk_events=embed.cf_chunk_events)
        ranker = ItemKnn.fit(events_before(run["sequences"], protocol, None), run["items"].height, **settings)
        evaluated = ItemKnn.fit(training_prefix(run["sequences"], protocol, users="all"), run["items"].height,
                                **settings)
        ranking = dict(beam_size=ranker.width, batch_size=ITEM_KNN_BLOCK)
    rec = build_recommender(ranker, seq, run["items"], run["behaviors"], run["sid_table"], run["sid_vocab"],
                            run["repeat_head"], protocol=protocol, max_history=args.history, **ranking,
                            renormalize=False, temperature=None, session_gap_seconds=1800.0,
                            chunk_events=embed.cf_chunk_events)
    eval_params = {"beam_size": args.beam, "topk": [1, 5, 10], "batch_size": 16, "renormalize": False,
                   "temperature": None, "device": None}

    def batch():
        return recommend_users(rec, seq, run["users"], k=10)[0]

    def evaluation():
        if args.kind == "item_knn":
            test = eval_set(seq, protocol, "test", args.history)
            return rank_repeat_aware(predictions_table(test, evaluated.rank(test)), run["repeat_head"], seq,
                                     run["behaviors"], protocol, args.history, eval_params, embed.model_dump())
        predictions = rank_decoder(rec.model, seq, run["behaviors"], run["sid_table"], run["sid_vocab"], protocol,
                                   args.history, eval_params, split="test")
        if run["repeat_head"]:
            predictions = rank_repeat_aware(predictions, run["repeat_head"], seq, run["behaviors"], protocol,
                                            args.history, eval_params, embed.model_dump())
        return predictions

    times, outputs = {"batch": [], "evaluation": []}, {}
    for _ in range(3):  # interleaved, so machine load hits both alike
        for name, fn in (("batch", batch), ("evaluation", evaluation)):
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    table, n_batch, n_eval = outputs["batch"], outputs["batch"].height, outputs["evaluation"].height
    batch_qps = n_batch / statistics.median(times["batch"])
    eval_qps = n_eval / statistics.median(times["evaluation"])

    import mlflow
    import pandas as pd

    from seqrec_pipeline.serving.pyfunc import ENTRY, SIGNATURE

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = rec.save(Path(tmp) / "artifacts")
        mlflow.pyfunc.save_model(str(Path(tmp) / "model"), python_model=str(ENTRY), artifacts=artifacts,
                                 signature=SIGNATURE)
        model = mlflow.pyfunc.load_model(str(Path(tmp) / "model"))
    one = pd.DataFrame([request_of(rec, seq, 0, args.history)])
    model.predict(one)  # warm-up
    latency = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.predict(one)
        latency.append(time.perf_counter() - start)
    n64 = min(64, seq.height)
    # whole logs: the repeat head reads the whole past, so these lists must equal the batch output
    many = pd.DataFrame([request_of(rec, seq, r) for r in range(n64)])
    batch64 = []
    for _ in range(5):
        start = time.perf_counter()
        answers = model.predict(many)
        batch64.append(time.perf_counter() - start)
    # the pyfunc's lists for the first 64 users against the batch output (same whole-log histories)
    user_ids = run["users"].join(seq.select("user_idx"), on="user_idx")["user_id"].to_list()
    first = table.filter(pl.col("user_id").is_in(user_ids[:n64]))
    expected = {(r["user_id"], r["behavior"]): r["items"] for r in first.iter_rows(named=True)}
    got = {(user_ids[i], x["behavior"]): x["items"] for i, a in enumerate(answers) for x in a["recommendations"]}
    identical = float(np.mean([got.get(key) == items for key, items in expected.items()]))

    report = {
        "benchmark": "serve", "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
        "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "mlflow": mlflow.__version__, "python": platform.python_version()},
        "setting": {"data": run["setting"], "kind": args.kind, "users": seq.height, "items": run["items"].height,
                    "history": args.history, "beam_size": ranking["beam_size"], "k": 10, "repeat_head": bool(run["repeat_head"])},
        "batch": {"queries": n_batch, "median_s": statistics.median(times["batch"]), "queries_per_s": batch_qps,
                  "all_s": times["batch"]},
        "baseline": {"name": ("evaluation nodes rank_decoder(test) + rank_repeat_aware on the same users"
                              if args.kind == "decoder" else "the item_knn evaluation's ItemKnn.rank(test) + "
                              "rank_repeat_aware with the same fitted mixture, on the same users"),
                     "queries": n_eval, "median_s": statistics.median(times["evaluation"]), "queries_per_s": eval_qps,
                     "all_s": times["evaluation"]},
        "ratio": batch_qps / eval_qps,
        "ratio_meaning": "batch queries/s / evaluation queries/s (> 1: batch recommendations are faster per list)",
        "pyfunc": {"one_request_events": int(len(one.iloc[0]["items"])),
                   "latency_p50_ms": 1000 * float(np.percentile(latency, 50)),
                   "latency_p99_ms": 1000 * float(np.percentile(latency, 99)), "repeats": args.repeats,
                   "batch_requests": n64, "batch_mean_events": float(many["items"].map(len).mean()), "batch_requests_per_s": n64 / statistics.median(batch64),
                   "batch_all_s": batch64},
        "pyfunc_batch_identical_share": identical,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("batch", "baseline", "ratio", "pyfunc", "pyfunc_batch_identical_share")},
                     indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
