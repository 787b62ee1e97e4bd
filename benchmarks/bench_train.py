"""Training-speed benchmark of the generative models (a named baseline, same process, a ratio).

1. Train-step throughput (forward + backward + AdamW step) of ``gamer`` against plain ``qwen3`` of equal
   width and depth, on 50-item histories (4 codes + a behavior token per item = 250 tokens per sequence).
   Reports ``gamer_vs_qwen3_ratio`` = gamer samples/s / qwen3 samples/s (target >= 0.85) with behaviors drawn
   in Taobao's measured shares, and the same with uniform behaviors (``BEHAVIOR_MIXES``), together with the
   FLOPs of one step of each model: gamer does more arithmetic per token (cross-level attention in the
   upper layers: keys/values of every token, queries only where a lower-level key exists), and the FLOP
   ratio bounds what equal efficiency buys.
2. The batched slot-expert FFN (``SlotExpertFFN``) against the reference's per-expert Python loop with boolean
   gather/scatter (``loop_expert_ffn``), same weights, on 100-item histories, forward + backward of one
   injection-layer FFN: the loop on the concatenated input ``[h, behavior embedding]`` (the reference), ours
   on ``h`` plus a per-(slot, behavior) table lookup (same function).  Reports ``batched_experts_speedup``
   (target >= 2).

Both models train with the trainer's optimizer, torch's fused AdamW (``--no-fused-adamw``: the per-tensor
loop, whose cost grows with gamer's larger parameter count: five slot experts per FFN).
Both comparisons interleave their two contenders (A B A B ...) so load from other processes hits both,
warm up first, and report medians over repeats.

    python benchmarks/bench_train.py                       # CPU defaults: a few minutes on 2 cores
    python benchmarks/bench_train.py --device cuda --dtype bf16 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from seqrec_pipeline.models.generative import SlotExpertFFN, SlotRouting, build_model, loop_expert_ffn
from seqrec_pipeline.models.generative.experts import grouped_mm_supported
from seqrec_pipeline.vocab import TokenVocab

BEHAVIORS = ("click", "cart", "fav", "buy")
LEVELS = (0, 1, 1, 2)
# Behavior shares of the synthetic histories.  "taobao": measured on ../shared/data/taobao_head/UserBehavior.csv
# (84,476 events: pv 75,873 / cart 4,497 / fav 2,356 / buy 1,750), the usual shape of multi-behavior logs;
# "uniform": every behavior equally often, a stress case for the cross-level attention (3 in 4 tokens have
# lower-level keys).
BEHAVIOR_MIXES = {"taobao": (0.898, 0.053, 0.028, 0.021), "uniform": (0.25, 0.25, 0.25, 0.25)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def benchmark_vocab() -> TokenVocab:
    """4 behaviors, 4 code levels of 256 (the reference's RQ-VAE shape): blocks of P = 5 tokens."""
    return TokenVocab(BEHAVIORS, (256, 256, 256, 256))


def synthetic_batch(
    vocab: TokenVocab, batch_size: int, n_items: int, device: torch.device, seed: int = 0, mix: str = "taobao"
) -> dict:
    """Full-length training sequences of ``n_items`` random blocks, as the data stage would collate them."""
    g = torch.Generator().manual_seed(seed)
    p = vocab.block_size
    shares = torch.tensor(BEHAVIOR_MIXES[mix])
    behavior = torch.multinomial(shares, batch_size * n_items, replacement=True, generator=g).view(batch_size, n_items)
    codes = torch.stack([torch.randint(s, (batch_size, n_items), generator=g) for s in vocab.level_sizes], -1)
    behavior_tokens = torch.from_numpy(vocab.behavior_token(behavior.numpy()))
    code_tokens = torch.from_numpy(vocab.code_tokens(codes.numpy()))
    tokens = torch.cat([behavior_tokens[..., None], code_tokens], dim=-1)  # [B, items, P]
    input_ids = tokens.reshape(batch_size, n_items * p)
    labels = input_ids.clone().reshape(batch_size, n_items, p)
    labels[..., 0] = -100  # no loss on behavior tokens
    slot = torch.arange(p).repeat(n_items).expand(batch_size, -1)
    block_behavior = behavior.repeat_interleave(p, dim=1)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "slot": slot.contiguous(),
        "behavior": block_behavior,
        "level": torch.tensor(LEVELS)[block_behavior],
        "labels": labels.reshape(batch_size, n_items * p),
    }
    return {key: value.to(device) for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], device, warmup: int, repeats: int, inner: int) -> dict:
    """Median seconds per call of each fn; contenders alternate so background load hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: {"median_s": statistics.median(s), "min_s": min(s), "all_s": s} for name, s in samples.items()}


def _register_grouped_mm_flops() -> None:
    """torch's FlopCounterMode does not count grouped GEMMs; teach it (2 * rows * inner * cols)."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    if torch.ops.aten._grouped_mm in flop_registry:  # already taught (or natively counted)
        return

    @register_flop_formula(torch.ops.aten._grouped_mm, get_raw=False)
    def _grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        if len(a_shape) == 2 and len(b_shape) == 3:  # forward / input grad: [N, K] x [G, K, M]
            return 2 * a_shape[0] * a_shape[1] * b_shape[2]
        if len(a_shape) == 2 and len(b_shape) == 2:  # weight grad: [K, N] x [N, M] split along N
            return 2 * a_shape[0] * a_shape[1] * b_shape[1]
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[-1]


def train_step_fn(model, batch: dict, optimizer) -> Callable[[], None]:
    def step() -> None:
        loss = model(**batch, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def count_step_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def bench_train_step(args, device: torch.device, dtype: torch.dtype, mix: str) -> dict:
    vocab = benchmark_vocab()
    batch = synthetic_batch(vocab, args.batch_size, args.train_items, device, mix=mix)
    tokens_per_step = int(batch["attention_mask"].sum())
    steps, models = {}, {}
    for name in ("gamer", "qwen3"):
        torch.manual_seed(0)
        model = build_model(name, vocab, preset=args.preset).to(device=device, dtype=dtype).train()
        # The trainer's optimizer (conf/base/deepspeed/*.json: "torch_adam": true, "fused": true).
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=args.fused_adamw)
        steps[name], models[name] = train_step_fn(model, batch, optimizer), model

    timings = time_interleaved(steps, device, args.warmup, args.repeats, args.inner)
    flops = {}
    try:
        _register_grouped_mm_flops()
        flops = {name: count_step_flops(step) for name, step in steps.items()}
    except Exception as error:  # FLOP counting is context, not the measurement
        flops = {"error": repr(error)}

    result = {
        "behavior_mix": dict(zip(BEHAVIORS, BEHAVIOR_MIXES[mix])),
        "tokens_per_step": tokens_per_step,
        "sequence_length": batch["input_ids"].shape[1],
    }
    for name in steps:
        seconds = timings[name]["median_s"]
        result[name] = {
            "params": sum(p.numel() for p in models[name].parameters()),
            "step_s_median": seconds,
            "step_s_all": timings[name]["all_s"],
            "samples_per_s": args.batch_size / seconds,
            "tokens_per_s": tokens_per_step / seconds,
            "flops_per_step": flops.get(name),
        }
    result["gamer_vs_qwen3_ratio"] = result["gamer"]["samples_per_s"] / result["qwen3"]["samples_per_s"]
    result["target_ratio"] = 0.85
    if isinstance(flops.get("gamer"), int) and flops.get("gamer"):
        result["qwen3_vs_gamer_flop_ratio"] = flops["qwen3"] / flops["gamer"]
        result["gamer_vs_qwen3_flops_per_s_ratio"] = result["gamer_vs_qwen3_ratio"] / result["qwen3_vs_gamer_flop_ratio"]
    if args.profile:
        result["profile"] = {name: profile_step(step, device) for name, step in steps.items()}
    return result


def profile_step(step: Callable[[], None], device: torch.device, top: int = 15) -> list[dict]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key, 0) / 1e3} for e in events]


def bench_experts(args, device: torch.device, dtype: torch.dtype) -> dict:
    vocab = benchmark_vocab()
    torch.manual_seed(0)
    model = build_model("gamer", vocab, preset=args.preset)
    config = model.config
    # An injection-layer FFN: input = [hidden, behavior embedding], one SwiGLU expert per slot.
    ffn = SlotExpertFFN(
        config.num_slots, config.hidden_size + config.behavior_embed_dim, config.intermediate_size,
        config.hidden_size, config.hidden_act, config.expert_impl,
    ).to(device=device, dtype=dtype)  # fmt: skip
    torch.nn.init.normal_(ffn.gate_up_proj, std=0.02)
    torch.nn.init.normal_(ffn.down_proj, std=0.02)
    batch = synthetic_batch(vocab, args.expert_batch_size, args.expert_items, device, seed=1)
    slot = batch["slot"]
    table = torch.randn(config.num_behaviors + 1, config.behavior_embed_dim, device=device, dtype=dtype)
    table[0] = 0  # "no behavior" row (behavior tokens), as the model's padding_idx
    index = torch.where(slot > 0, batch["behavior"] + 1, 0)
    h = torch.randn(*slot.shape, config.hidden_size, device=device, dtype=dtype, requires_grad=True)
    table.requires_grad_(True)
    grad = torch.randn(*slot.shape, config.hidden_size, device=device, dtype=dtype)

    def ours() -> torch.Tensor:  # routing is rebuilt every call (in the model it is built once per forward)
        return ffn(h, SlotRouting.from_slots(slot, config.num_slots), table, index)

    def reference() -> torch.Tensor:
        return loop_expert_ffn(ffn, torch.cat([h, table[index]], dim=-1), slot)

    def batched() -> None:
        ours().backward(grad)

    def looped() -> None:
        reference().backward(grad)

    def batched_forward() -> None:
        with torch.no_grad():
            ours()

    def looped_forward() -> None:
        with torch.no_grad():
            reference()

    with torch.no_grad():
        max_abs_diff = (ours() - reference()).abs()
    train = time_interleaved({"batched": batched, "loop": looped}, device, args.warmup, args.repeats, args.inner)
    infer = time_interleaved(
        {"batched": batched_forward, "loop": looped_forward}, device, args.warmup, args.repeats, args.inner
    )
    return {
        "tokens": int(slot.numel()),
        "sequence_length": slot.shape[1],
        "shape": {"num_slots": config.num_slots, "d_in": ffn.gate_up_proj.shape[1],
                  "intermediate": config.intermediate_size, "d_out": config.hidden_size},  # fmt: skip
        "kernel": "grouped_mm" if grouped_mm_supported(h, ffn.gate_up_proj) else "bmm",
        "max_abs_diff_vs_loop": float(max_abs_diff.max()),
        "fwd_bwd_ms": {"batched": train["batched"]["median_s"] * 1e3, "loop": train["loop"]["median_s"] * 1e3},
        "fwd_ms": {"batched": infer["batched"]["median_s"] * 1e3, "loop": infer["loop"]["median_s"] * 1e3},
        "batched_experts_speedup": train["loop"]["median_s"] / train["batched"]["median_s"],
        "batched_experts_speedup_forward_only": infer["loop"]["median_s"] / infer["batched"]["median_s"],
        "target_speedup": 2.0,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting/benchmarks/train.json"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--preset", choices=["cpu-small", "paper"], default="paper")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per train step")
    parser.add_argument("--train-items", type=int, default=50, help="items per training sequence")
    parser.add_argument("--expert-batch-size", type=int, default=16, help="sequences in the expert benchmark")
    parser.add_argument("--expert-items", type=int, default=100, help="items per sequence, expert benchmark")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=1, help="calls per timed repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="add the top ops of one step of each model")
    parser.add_argument("--no-fused-adamw", dest="fused_adamw", action="store_false",
                        help="torch's per-tensor AdamW loop instead of the fused kernel the trainer uses")
    parser.add_argument("--skip", choices=["train", "experts"], action="append", default=[])
    parser.add_argument(
        "--behavior-mixes", nargs="+", choices=sorted(BEHAVIOR_MIXES), default=["taobao", "uniform"],
        help="behavior shares of the train-step histories; the first gives the top-level ratio",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    dtype = DTYPES[args.dtype]
    report = {
        "benchmark": "bench_train",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "cpu_threads": torch.get_num_threads(),
        },
    }
    if "train" not in args.skip:
        report["train_step"] = {mix: bench_train_step(args, device, dtype, mix) for mix in args.behavior_mixes}
        for mix, result in report["train_step"].items():
            key = "gamer_vs_qwen3_ratio" if mix == args.behavior_mixes[0] else f"gamer_vs_qwen3_ratio_{mix}_behaviors"
            report[key] = result["gamer_vs_qwen3_ratio"]
        report["gamer_vs_qwen3_ratio_behavior_mix"] = args.behavior_mixes[0]
    if "experts" not in args.skip:
        report["experts"] = bench_experts(args, device, dtype)
        report["batched_experts_speedup"] = report["experts"]["batched_experts_speedup"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k.startswith(("gamer_vs_qwen3_ratio", "batched_experts"))}
    print(json.dumps(summary, indent=2), f"\nwritten to {args.out}")
    return report


if __name__ == "__main__":
    main()
