"""Logit fidelity of every CPU fast path on a random-weight aMUSEd transformer, at batch sizes the bench does not
time (no timing here): the bench's fixed half-masked probe, logits against fp32 (cosine, top-1 agreement).

Usage: python benchmarks/fast_path_fidelity.py [--preset amused-256] [--batch 1,4] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from musekit.eval.bench_amused import FAST_PATHS, bench_inputs, fast_path_model, random_models
from musekit.models.quantize import logits_fidelity


def probe_inputs(config, ours, batch: int):
    """The bench's inputs for one batch size: (cache, probe ids)."""
    _, _, micro, text, probe = bench_inputs(config, batch)
    with torch.no_grad():
        return ours.precompute(text, micro_conds=micro), probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="amused-256")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, _, ours = random_models(args.preset)
    for batch in (int(b) for b in args.batch.split(",")):
        cache, probe = probe_inputs(config, ours, batch)
        with torch.no_grad():
            reference = ours(probe, cache=cache)
            for path in FAST_PATHS:
                fidelity = logits_fidelity(reference, fast_path_model(ours, path, probe, cache)(probe, cache=cache))
                print(f"batch {batch} {path}: cosine mean {fidelity['cosine_mean']:.6f}, min "
                      f"{fidelity['cosine_min']:.6f}, top-1 {fidelity['top1_agreement']:.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
