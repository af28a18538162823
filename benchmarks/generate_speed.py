"""Import + load time of the bundled model, then seconds per image at batch 1 (median of 5 after a warm-up), fp32 and
with ``pipe.quantize(KIND)`` for each of ``--kinds``.

Usage: python benchmarks/generate_speed.py [MODEL_DIR] [--threads 2] [--kinds int8,int8-all,bf16,bf16-linears]
A kind ending in ``+compile`` (int8, int8-all and bf16-linears) is quantized with ``compile=True``; its warm-up call,
which compiles, is timed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

PROMPT = "a large red circle in the center on a blue background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default="int8,int8-all", help="comma-separated MusePipeline.quantize kinds")
    args = parser.parse_args()
    start = time.perf_counter()
    import torch

    from musekit import MusePipeline

    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    print(f"imports + model load: {time.perf_counter() - start:.2f} s")
    for label in ["fp32", *args.kinds.split(",")]:
        if label != "fp32":
            kind = label.removesuffix("+compile")
            pipe = MusePipeline.from_pretrained(args.model).quantize(kind, compile=kind != label)
            pipe.progress_bar = False
        t0 = time.perf_counter()
        pipe(PROMPT, generator=torch.Generator().manual_seed(0))
        if label.endswith("+compile"):
            print(f"{label}: warm-up call (compiles) {time.perf_counter() - t0:.1f} s")
        times = []
        for seed in range(5):
            t0 = time.perf_counter()
            pipe(PROMPT, generator=torch.Generator().manual_seed(seed))
            times.append(time.perf_counter() - t0)
        print(f"{label}: {statistics.median(times):.3f} s per image (median of 5)")


if __name__ == "__main__":
    main()
