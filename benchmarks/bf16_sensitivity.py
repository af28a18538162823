"""Which linears of a random-weight aMUSEd transformer flip top-1 logits when their products run in bf16
(``Bf16Linear``), one group of same-named per-step linears at a time, on the bench's batch-1 probe.

Usage: python benchmarks/bf16_sensitivity.py [--preset amused-256] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import re
from collections import defaultdict
from functools import partial

import torch
from fast_path_fidelity import probe_inputs  # noqa: E402  (benchmarks/ is the script's folder)

from musekit.eval.bench_amused import _forward, random_models
from musekit.models.quantize import Bf16Linear, logits_fidelity, step_linears


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="amused-256")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, _, ours = random_models(args.preset)
    cache, probe = probe_inputs(config, ours, 1)
    with torch.no_grad():
        reference = ours(probe, cache=cache)
    groups = defaultdict(list)
    for name in step_linears(ours, partial(_forward, ids=probe, cache=cache)):
        groups[re.sub(r"\.\d+\.", ".N.", name)].append(name)
    for key, names in sorted(groups.items()):
        fast = copy.deepcopy(ours)
        for name in names:
            parent, _, leaf = name.rpartition(".")
            owner = fast.get_submodule(parent) if parent else fast
            setattr(owner, leaf, Bf16Linear(getattr(owner, leaf)))
        with torch.no_grad():
            top1 = logits_fidelity(reference, fast(probe, cache=cache))["top1_agreement"]
        layer = ours.get_submodule(names[0])
        print(f"{key} x{len(names)} ({layer.in_features}->{layer.out_features}): top-1 {top1:.4f}", flush=True)


if __name__ == "__main__":
    main()
