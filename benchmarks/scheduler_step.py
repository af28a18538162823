"""Milliseconds per scheduler step (sampling, confidence, re-masking).

Usage: python benchmarks/scheduler_step.py [--threads 2] [--amused]
Rows: batch, tokens, codebook, share of tokens still masked; random logits; mean of 20 steps after 3 warm-up steps.
Default: musekit's MaskGIT scheduler at the shapes stages' sizes. ``--amused``: the aMUSEd scheduler at aMUSEd-256's
size (256 tokens, 8,192 codes) with each of its draws (``torch.multinomial``, diffusers' random stream, or inverse
CDF). Run it under PYTHONPATH=OLD_CHECKOUT/src to time an older scheduler on the same inputs.
"""

from __future__ import annotations

import argparse
import time

import torch

from musekit.sampling.scheduler import MaskGITScheduler

CASES = ((1, 1024, 1024, 0.2), (8, 1024, 1024, 0.2), (2, 256, 256, 0.5), (8, 256, 256, 0.5))
AMUSED_CASES = ((1, 256, 8192, 1.0), (1, 256, 8192, 0.5), (4, 256, 8192, 1.0), (4, 256, 8192, 0.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amused", action="store_true", help="the aMUSEd scheduler's draws at aMUSEd-256's size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(case, "") for case in CASES]
    if args.amused:  # imported here: the default mode also runs against older checkouts
        from musekit.config import SCHEDULER_DRAWS
        from musekit.sampling.amused_scheduler import AmusedScheduler

        cases = [(case, draws) for case in AMUSED_CASES for draws in SCHEDULER_DRAWS]
    for (batch, length, codebook, share), draws in cases:
        scheduler = AmusedScheduler(codebook, draws=draws) if draws else MaskGITScheduler(codebook)
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
        name = f"aMUSEd scheduler, {draws} draws, " if draws else ""
        print(f"{name}batch {batch}, {length} tokens, codebook {codebook}, {share:.0%} masked: {ms:.2f} ms per step")


if __name__ == "__main__":
    main()
