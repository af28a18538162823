"""Milliseconds per MaskGIT scheduler step (sampling, confidence, re-masking) at the shapes stages' sizes.

Usage: python benchmarks/scheduler_step.py [--threads 2]
Rows: batch, tokens, codebook, share of tokens still masked; random logits; mean of 20 steps after 3 warm-up steps.
Run it under PYTHONPATH=OLD_CHECKOUT/src to time an older scheduler on the same inputs.
"""

from __future__ import annotations

import argparse
import time

import torch

from musekit.sampling.scheduler import MaskGITScheduler

CASES = ((1, 1024, 1024, 0.2), (8, 1024, 1024, 0.2), (2, 256, 256, 0.5), (8, 256, 256, 0.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for batch, length, codebook, share in CASES:
        scheduler = MaskGITScheduler(codebook)
        scheduler.set_timesteps(4)
        ids = torch.randint(0, codebook, (batch, length), generator=torch.Generator().manual_seed(0))
        ids[torch.rand(batch, length, generator=torch.Generator().manual_seed(1)) < share] = codebook
        logits = torch.randn(batch, length, codebook, generator=torch.Generator().manual_seed(2))
        generator = torch.Generator().manual_seed(3)
        for _ in range(3):
            scheduler.step(logits, scheduler.timesteps[1], ids, generator=generator)
        start = time.perf_counter()
        for _ in range(20):
            scheduler.step(logits, scheduler.timesteps[1], ids, generator=generator)
        ms = (time.perf_counter() - start) / 20 * 1000
        print(f"batch {batch}, {length} tokens, codebook {codebook}, {share:.0%} masked: {ms:.2f} ms per step")


if __name__ == "__main__":
    main()
