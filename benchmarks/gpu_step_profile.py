"""Where a GPU decoding step spends its time, and how the half-precision path scales with batch (needs CUDA, diffusers).

For a random-weight aMUSEd config: per guided step (a 2B forward), the time of the graph replay alone, of the
sampler's own work (guidance, scheduler) and of the whole 12-step loop, in fp16 eager, fp16 graph and (with
``--compile``) torch.compile'd fp16 captured in the same graph; the model's FLOP/s against the measured fp16
matmul rate.

    python benchmarks/gpu_step_profile.py --preset amused-256 --batch 1,4,16,64 [--compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch

from musekit.eval.bench_amused import _musekit_loop_cuda, cuda_matmul_tflops, forward_flops, random_models
from musekit.models.half import HalfPrecisionModel
from musekit.text import TextEmbeddings


def timed(fn, repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


KINDS = (("gemm", ("gemm", "cutlass", "sm90", "xmma", "cublas")), ("attention", ("flash", "fmha", "attention")),
         ("conv", ("conv", "cudnn", "implicit")), ("norm", ("norm", "rms")), ("reduce", ("reduce",)))  # fmt: skip


def kernel_breakdown(model, ids, text, micro) -> dict[str, float]:
    """GPU milliseconds of one fp16 forward, summed by kernel kind (names matched loosely), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        cache = model.precompute(text, micro_conds=micro)
        model(ids, cache=cache)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(ids, cache=cache)
            torch.cuda.synchronize()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        cuda_us = getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0)
        if not cuda_us:
            continue
        name = event.key.lower()
        kind = next((k for k, words in KINDS if any(w in name for w in words)), "elementwise/other")
        totals[kind] = totals.get(kind, 0.0) + cuda_us / 1e3
    return {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="amused-256")
    parser.add_argument("--batch", default="1,4,16,64")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="also torch.compile the fp16 forward")
    parser.add_argument("--breakdown", action="store_true", help="GPU time per kernel kind (fp16 eager, profiler)")
    args = parser.parse_args()
    config, _, ours = random_models(args.preset)
    ours = ours.cuda()
    peak = cuda_matmul_tflops(torch.float16)
    variants = {"fp16_eager": HalfPrecisionModel(ours, "fp16", cuda_graph=False),
                "fp16_graph": HalfPrecisionModel(ours, "fp16")}  # fmt: skip
    if args.compile:
        compiled = HalfPrecisionModel(ours, "fp16")
        compiled.fast = torch.compile(compiled.fast)
        variants["fp16_compile_graph"] = compiled
    grid = config.sample_size
    for batch in (int(b) for b in args.batch.split(",")):
        g = torch.Generator().manual_seed(0)
        states = torch.randn(2 * batch, 77, config.encoder_hidden_size, generator=g).cuda()
        pooled = torch.randn(2 * batch, config.cond_embed_dim, generator=g).cuda()
        side = float(grid * 16)
        micro = torch.tensor([[side, side, 0.0, 0.0, 6.0]]).repeat(2 * batch, 1).cuda()
        text = TextEmbeddings(states, pooled, torch.ones(states.shape[:2], dtype=torch.bool, device="cuda"))
        ids = torch.full((2 * batch, grid, grid), config.mask_token_id, device="cuda")
        with torch.no_grad():
            flops = forward_flops(ours, ours.precompute(text, micro_conds=micro), ids)
        row = {"preset": args.preset, "batch": batch, "gflop_per_forward": flops / 1e9, "fp16_peak_tflops": peak}
        for name, model in variants.items():
            try:
                with torch.no_grad():
                    cache = model.precompute(text, micro_conds=micro)
                    start = time.perf_counter()
                    model(ids, cache=cache)  # capture (and compile)
                    torch.cuda.synchronize()
                    first = time.perf_counter() - start
                    forward = timed(partial(model, ids, cache=cache))
                loop = timed(partial(_musekit_loop_cuda, model, cache, config, batch, args.steps, 10.0), 5)
            except Exception as err:  # noqa: BLE001 - report and go on
                row[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
                continue
            row[name] = {
                "first_call_s": first, "forward_ms": forward * 1e3, "loop_s": loop,
                "sampler_ms_per_step": (loop / args.steps - forward) * 1e3,
                "forward_tflops": flops / forward / 1e12, "forward_fraction_of_peak": flops / forward / 1e12 / peak,
                "loop_fraction_of_peak": flops * args.steps / loop / 1e12 / peak,
            }  # fmt: skip
        print(json.dumps(row), flush=True)
        if args.breakdown:
            try:
                breakdown = kernel_breakdown(variants["fp16_eager"], ids, text, micro)
            except Exception as err:  # noqa: BLE001 - report and go on
                breakdown = f"{type(err).__name__}: {err}"[:300]
            print(json.dumps({"batch": batch, "breakdown_ms": breakdown}), flush=True)


if __name__ == "__main__":
    main()
