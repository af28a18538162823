"""Where one forward of a CPU fast path on random aMUSEd-256 weights spends its time, part by part.

Usage: python benchmarks/forward_breakdown.py [--path bf16_linears] [--batch 1] [--threads 2] [--repeats 5]
Each part's wall time is summed over the forward (a CPU runs one op at a time, so wall time per call is the part's
cost); a guided batch of B images is 2B rows, all tokens masked. Parts overlap (an attention contains its
projections): read them as a tree. "sdpa" is every scaled_dot_product_attention call (the convolution stages'
cross-attentions too).
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
import torch.nn.functional as F

from musekit.eval.bench_amused import FAST_PATHS, bench_inputs, fast_path_model, random_models

LAYER_PARTS = {
    "norm1": "norms",
    "norm2": "norms",
    "norm3": "norms",
    "attn1": "self-attention",
    "attn2": "cross-attention",
    "ff": "feed-forward",
    "attn1.to_q": "self-attention q, k projections",
    "attn1.to_k": "self-attention q, k projections",
    "attn1.to_v": "self-attention v, out projections",
    "attn1.to_out": "self-attention v, out projections",
    "attn2.to_q": "cross-attention q, out projections",
    "attn2.to_out": "cross-attention q, out projections",
    "ff.net.0.proj": "feed-forward products",
    "ff.net.2": "feed-forward products",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", default="bf16_linears", choices=("fp32", *FAST_PATHS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, _, ours = random_models()
    _, _, micro, text, probe = bench_inputs(config, args.batch)
    spent: dict[str, float] = collections.defaultdict(float)

    def timed(name, fn):
        def run(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            spent[name] += time.perf_counter() - start
            return out

        return run

    with torch.no_grad():
        cache = ours.precompute(text, micro_conds=micro)
        model = ours if args.path == "fp32" else fast_path_model(ours, args.path, probe, cache)
        inner = model.fast if args.path == "bf16" else model  # HalfPrecisionModel runs its copy .fast
        for layer in inner.transformer_layers:
            layer.forward = timed("transformer layers", layer.forward)
            for name, module in layer.named_modules():
                if name in LAYER_PARTS:
                    module.forward = timed(LAYER_PARTS[name], module.forward)
        inner.down_block.forward = timed("convolution stages", inner.down_block.forward)
        inner.up_block.forward = timed("convolution stages", inner.up_block.forward)
        sdpa = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = timed("sdpa", sdpa)
        masked = torch.full_like(probe, config.mask_token_id)
        try:
            model(masked, cache=cache)
            spent.clear()
            start = time.perf_counter()
            for _ in range(args.repeats):
                model(masked, cache=cache)
            total = (time.perf_counter() - start) / args.repeats
        finally:
            F.scaled_dot_product_attention = sdpa
    print(f"{args.path}, batch {args.batch} ({2 * args.batch} rows): {total * 1000:.1f} ms per forward")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {name:36s} {seconds / args.repeats * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
