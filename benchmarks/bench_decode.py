"""Decoding benchmark: our vectorized constrained beam search against the reference's decoding, same run.

Baseline (docs/benchmarks.md#decoding): ``transformers`` ``generate(num_beams=20,
num_return_sequences=20, max_new_tokens=4, early_stopping=True, prefix_allowed_tokens_fn=...)`` with the
reference's Python callback -- a dict-of-dicts trie over ``[behavior, c_1..c_4]`` token ids per behavior,
looked up per beam per step after scanning back to the last last-level code -- and one ``generate`` pass per
evaluated behavior (each expands the history to 20 beams before its prefill).

Ours: :func:`seqrec_pipeline.decoding.beam_search` in fixed-behavior mode: one history prefill per user,
shared by all behaviors and (qwen3) attended once per query for all its beams, trie masks from tensors,
no callback.

Both use the reference's scoring so the lists can match: full-vocabulary log-softmax, no temperature, and
``length_penalty=0`` for ``generate`` (every hypothesis has 4 new tokens, so any length penalty leaves the
ranking unchanged; 0 makes its ``sequences_scores`` the plain sums we report).  Setting (the reference's):
4-level codes of 256 with a behavior token, 4 behaviors, a catalog of random bijective codes, 64 users with
20-item histories, beam 20.  The model is random-init (``cpu-small`` preset unless ``--checkpoint``): speed
does not depend on the weights; list agreement is checked on the same random model.

``--model gamer`` times our decoder only (``generate`` cannot drive gamer's metadata inputs), ratio null.

    python benchmarks/bench_decode.py                        # a few minutes on 2 CPU cores
    python benchmarks/bench_decode.py --device cuda --users 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from seqrec_pipeline.decoding import PrefixIndex, beam_search, build_prompts
from seqrec_pipeline.models.generative import build_model, load_model, vocab_of
from seqrec_pipeline.vocab import PAD, TokenVocab

BEHAVIORS = ("click", "cart", "fav", "buy")
LEVELS = (0, 1, 1, 2)
DEFAULT_OUT = "data/08_reporting/benchmarks/decode.json"


# ----------------------------------------------------------------------------------------------- setup


def random_bijective_codes(n_items: int, level_sizes: tuple[int, ...], seed: int) -> np.ndarray:
    """``n_items`` distinct code sequences, uniform over the code space (mixed-radix digits of unique ints)."""
    rng = np.random.default_rng(seed)
    space = int(np.prod(level_sizes))
    drawn = np.unique(rng.integers(0, space, size=int(n_items * 1.2) + 16, dtype=np.int64))
    while len(drawn) < n_items:  # practically never for 10^4 of 2^32
        drawn = np.unique(np.concatenate([drawn, rng.integers(0, space, size=n_items, dtype=np.int64)]))
    values = rng.permutation(drawn)[:n_items]
    digits = []
    for size in reversed(level_sizes):
        digits.append(values % size)
        values = values // size
    return np.stack(digits[::-1], axis=1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- baseline


class ReferenceTrieCallback:
    """The reference's ``prefix_allowed_tokens_fn``: dict-of-dicts trie, scan back to the last item boundary."""

    def __init__(self, sequences: np.ndarray, last_token_set: set[int]) -> None:
        self.trie: dict = {}
        for seq in sequences.tolist():
            node = self.trie
            for token in seq:
                node = node.setdefault(token, {})
        self.last_token_set = last_token_set
        self.seconds = 0.0  # time spent inside the callback

    def __call__(self, batch_id: int, sentence: torch.Tensor) -> list[int]:
        start = time.perf_counter()
        tokens = sentence.tolist()
        i = len(tokens) - 1
        while i >= 0 and tokens[i] not in self.last_token_set:
            i -= 1
        node = self.trie
        for token in tokens[i + 1 :]:
            node = node.get(token, {})
        allowed = list(node.keys())
        self.seconds += time.perf_counter() - start
        return allowed


def hf_generate(model, prompts, vocab, codes, behaviors, beam, batch_size, callbacks, device):
    """Per behavior and batch: generate with the trie callback; returns items / scores [n_users, n_beh, beam]."""
    item_of_codes = {tuple(row): i for i, row in enumerate(codes.tolist())}
    n_users = len(prompts)
    items = np.full((n_users, len(behaviors), beam), -1, dtype=np.int64)
    scores = np.full((n_users, len(behaviors), beam), -np.inf)
    for j, b in enumerate(behaviors):
        for start in range(0, n_users, batch_size):
            batch = prompts.rows(slice(start, start + batch_size))
            n = len(batch)
            behavior_column = torch.full((n, 1), int(vocab.behavior_token(b)), dtype=torch.long)
            input_ids = torch.cat([batch.input_ids, behavior_column], 1).to(device)
            attention_mask = torch.cat([batch.attention_mask, torch.ones_like(behavior_column)], 1).to(device)
            out = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, do_sample=False, num_beams=beam,
                num_return_sequences=beam, max_new_tokens=vocab.n_levels, early_stopping=True, length_penalty=0.0,
                prefix_allowed_tokens_fn=callbacks[b], use_cache=True, pad_token_id=PAD, eos_token_id=vocab.size,
                return_dict_in_generate=True, output_scores=True,
            )  # fmt: skip
            new = out.sequences[:, input_ids.shape[1] :].cpu().numpy()
            seq_scores = out.sequences_scores.cpu().numpy().reshape(n, beam)
            decoded = np.array([item_of_codes.get(tuple(row), -1) for row in vocab.codes_from_tokens(new).tolist()])
            decoded, seq_scores = decoded.reshape(n, beam), seq_scores
            order = np.argsort(-seq_scores, axis=1, kind="stable")  # the reference sorts by sequences_scores
            items[start : start + n, j] = np.take_along_axis(decoded, order, 1)
            scores[start : start + n, j] = np.take_along_axis(seq_scores, order, 1)
    return items, scores


# ----------------------------------------------------------------------------------------------- comparison


def compare(ours_items, ours_scores, hf_items, hf_scores, k: int, tie_tol: float) -> dict:
    """Share of (user, behavior) queries with identical top-k lists, and why the others differ."""
    a, b = ours_items[..., :k].reshape(-1, k), hf_items[..., :k].reshape(-1, k)
    sa, sb = ours_scores[..., :k].reshape(-1, k), hf_scores[..., :k].reshape(-1, k)
    identical = (a == b).all(axis=1)
    same_set = np.array([set(x) == set(y) for x, y in zip(a.tolist(), b.tolist(), strict=True)])
    reasons = {"reordered_near_tie": 0, "baseline_lower_score": 0, "ours_lower_score": 0}
    for q in np.flatnonzero(~identical):
        pos = int(np.flatnonzero(a[q] != b[q])[0])  # first rank where the lists diverge
        gap = sa[q, pos] - sb[q, pos]
        if abs(gap) <= tie_tol:
            reasons["reordered_near_tie"] += 1
        elif gap > 0:
            reasons["baseline_lower_score"] += 1  # generate kept a worse item: it pruned the better prefix
        else:
            reasons["ours_lower_score"] += 1
    common = (a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)
    qi, ri, rj = np.nonzero(common)
    score_diff = float(np.abs(sa[qi, ri] - sb[qi, rj]).max()) if len(qi) else None
    return {
        f"top{k}_identical_share": float(identical.mean()),
        f"top{k}_same_set_share": float(same_set.mean()),
        f"top{k}_mismatches": int((~identical).sum()),
        f"top{k}_mismatch_reasons": reasons,
        f"top{k}_max_abs_score_diff_same_item": score_diff,
    }


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["qwen3", "gamer"], default="qwen3")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--checkpoint", help="a save_pretrained directory instead of a random-init model")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--history", type=int, default=20, help="history items per user")
    parser.add_argument("--items", type=int, default=10_000, help="catalog size")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--behaviors", type=int, nargs="+", default=list(range(len(BEHAVIORS))),
                        help="behavior indices evaluated for every user (fixed-behavior mode)")  # fmt: skip
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--topk", type=int, default=10, help="list length compared")
    # 16: on CPU the per-step KV-cache copies of 16 users x 4 behaviors x 20 beams stay cache-friendly; both
    # decoders run faster than at 64 (pass more on a GPU).
    parser.add_argument("--batch-size", type=int, default=16, help="users per batch (both decoders)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each decoder (alternating)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--device", default="cpu")
    # One thread by default: on a shared 2-core machine, 2 OpenMP threads competing with other work slow
    # small kernels down by an order of magnitude (spin-waits), which would blur the comparison.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tie-tol", type=float, default=1e-4, help="score gap counted as a numerical near-tie")
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    if args.checkpoint:
        model = load_model(args.checkpoint)
        vocab = vocab_of(model)
        model_init = f"checkpoint {args.checkpoint}"
        levels = LEVELS[: len(vocab.behaviors)]
    else:
        vocab = TokenVocab(BEHAVIORS, (args.codebook,) * args.levels)
        model = build_model(args.model, vocab, preset=args.preset)
        model_init = f"random init (seed {args.seed}), preset {args.preset}"
        levels = LEVELS
    model = model.to(device).eval()
    name = type(model).__name__
    run_baseline = not args.skip_baseline and args.model != "gamer" and "Gamer" not in name

    codes = random_bijective_codes(args.items, vocab.level_sizes, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    n_behaviors = len(vocab.behaviors)
    histories = [
        np.column_stack([rng.integers(args.items, size=args.history), rng.integers(n_behaviors, size=args.history)])
        for _ in range(args.users)
    ]
    prompts = build_prompts(histories, codes, vocab, levels)

    start = time.perf_counter()
    index = PrefixIndex.build(codes, vocab.level_sizes, device=device)
    index_build_s = time.perf_counter() - start

    def ours(prompt_batch):
        result = beam_search(
            model, prompt_batch, index, mode="fixed_behavior", behaviors=args.behaviors, behavior_levels=levels,
            beam_size=args.beam, top_k=args.beam, batch_size=args.batch_size, renormalize=False, temperature=1.0,
        )  # fmt: skip
        items = torch.stack([result.by_behavior[b].items for b in args.behaviors], 1).numpy()
        scores = torch.stack([result.by_behavior[b].scores for b in args.behaviors], 1).numpy()
        return items, scores

    callbacks = {}
    trie_build_s = None
    if run_baseline:
        start = time.perf_counter()
        code_tokens = vocab.code_tokens(codes)
        for b in args.behaviors:
            sequences = np.concatenate([np.full((len(codes), 1), vocab.behavior_token(b)), code_tokens], 1)
            last_level = range(vocab.level_offsets[-1], vocab.level_offsets[-1] + vocab.level_sizes[-1])
            callbacks[b] = ReferenceTrieCallback(sequences, set(last_level) | {PAD})
        trie_build_s = time.perf_counter() - start

    def baseline(prompt_batch):
        return hf_generate(model, prompt_batch, vocab, codes, args.behaviors, args.beam, args.batch_size, callbacks,
                           device)  # fmt: skip

    # Warm-up on two users (allocator, kernels, lazy imports), then alternate timed runs.
    warm = prompts.rows(slice(0, 2))
    ours(warm)
    if run_baseline:
        baseline(warm)
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    callback_s = []
    for _ in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        our_items, our_scores = ours(prompts)
        synchronize(device)
        times["ours"].append(time.perf_counter() - start)
        if run_baseline:
            for cb in callbacks.values():
                cb.seconds = 0.0
            start = time.perf_counter()
            hf_items, hf_scores = baseline(prompts)
            synchronize(device)
            times["baseline"].append(time.perf_counter() - start)
            callback_s.append(sum(cb.seconds for cb in callbacks.values()))

    ours_s = statistics.median(times["ours"])
    n_queries = args.users * len(args.behaviors)
    report = {
        "benchmark": "decode",
        "description": "fixed-behavior constrained beam search: seqrec_pipeline.decoding.beam_search vs "
        "transformers generate + the reference's prefix_allowed_tokens_fn dict trie, same model, users, catalog",
        "model": args.model if not args.checkpoint else name,
        "model_init": model_init,
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},  # fmt: skip
        "machine": platform.machine(),
        "setting": {
            "users": args.users,
            "history_items": args.history,
            "prompt_tokens": int(prompts.input_ids.shape[1]) + 1,
            "catalog_items": args.items,
            "level_sizes": list(vocab.level_sizes),
            "behavior_token": vocab.use_behavior_token,
            "behaviors_evaluated": [vocab.behaviors[b] for b in args.behaviors],
            "queries": n_queries,
            "beam_size": args.beam,
            "num_return_sequences": args.beam,
            "batch_size_users": args.batch_size,
            "scoring": "sum of full-vocabulary log-softmax log-probs, temperature 1 (renormalize=False); "
            "generate: length_penalty=0, early_stopping=True",
        },
        "index": {"build_s": index_build_s, **index.describe()},
        "ours": {"median_s": ours_s, "all_s": times["ours"], "ms_per_query": 1000 * ours_s / n_queries},
        "baseline": None,
        "ratio": None,
    }
    if run_baseline:
        baseline_s = statistics.median(times["baseline"])
        report["baseline"] = {
            "name": f"transformers {transformers.__version__} generate(num_beams={args.beam}, "
            f"num_return_sequences={args.beam}, max_new_tokens={vocab.n_levels}, prefix_allowed_tokens_fn=dict trie)"
            ", one pass per behavior",
            "median_s": baseline_s,
            "all_s": times["baseline"],
            "callback_s": statistics.median(callback_s),
            "trie_build_s": trie_build_s,
            "ms_per_query": 1000 * baseline_s / n_queries,
        }
        report["ratio"] = baseline_s / ours_s
        report["ratio_meaning"] = "baseline time / our time = our speed / baseline speed"
        report.update(compare(our_items, our_scores, hf_items, hf_scores, args.topk, args.tie_tol))
        report.update({k: v for k, v in compare(our_items, our_scores, hf_items, hf_scores, args.beam,
                                                args.tie_tol).items() if "identical_share" in k})  # fmt: skip
        report["differences_explained"] = (
            "A mismatch is counted per (user, behavior) top-k list.  'reordered_near_tie': at the first differing "
            f"rank the two scores differ by <= {args.tie_tol} (float noise of different batch shapes: generate "
            "prefills 20 copies of each history, we prefill one); 'baseline_lower_score': generate returned a "
            "worse item there (HF keeps 2 x num_beams candidates and finalizes beams at max length, so with "
            "identical scores it should not happen); 'ours_lower_score': the reverse."
        )
    else:
        report["baseline_skipped"] = (
            "transformers generate cannot drive gamer (it needs slot/behavior/level inputs per token)"
            if not args.skip_baseline else "--skip-baseline"
        )  # fmt: skip

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("ours", "baseline", "ratio") if k in report}, indent=2))
    for key in (f"top{args.topk}_identical_share", f"top{args.topk}_mismatch_reasons"):
        if key in report:
            print(key, report[key])
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
