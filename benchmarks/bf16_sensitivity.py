"""Which linears flip top-1 logits when their products run in bf16 (``Bf16Linear``), one group of same-named
per-step linears at a time: on a random-weight aMUSEd transformer (the bench's batch-1 probe), or with ``--model`` on
a model folder's two stages (``int8_fidelity.py``'s four prompts and half-masked inputs; ``bundled`` for the
package's own model).

Usage: python benchmarks/bf16_sensitivity.py [--preset amused-256] [--model DIR|bundled] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import re
from collections import defaultdict
from functools import partial

import torch
from fast_path_fidelity import probe_inputs  # noqa: E402  (benchmarks/ is the script's folder)
from int8_fidelity import stage_inputs  # noqa: E402

from musekit.eval.bench_amused import _forward, random_models
from musekit.models.quantize import Bf16Linear, logits_fidelity, step_linears


def sensitivity(label: str, model, ids: torch.Tensor, cache) -> None:
    """Print, per group of same-named per-step linears of ``model``, top-1 agreement with fp32 with that group
    alone in bf16."""
    with torch.no_grad():
        reference = model(ids, cache=cache)
    groups = defaultdict(list)
    for name in step_linears(model, partial(_forward, ids=ids, cache=cache)):
        groups[re.sub(r"\.\d+\.", ".N.", name)].append(name)
    print(f"{label}: {reference.shape[0] * reference.shape[1]} positions", flush=True)
    for key, names in sorted(groups.items()):
        fast = copy.deepcopy(model)
        for name in names:
            parent, _, leaf = name.rpartition(".")
            owner = fast.get_submodule(parent) if parent else fast
            setattr(owner, leaf, Bf16Linear(getattr(owner, leaf)))
        with torch.no_grad():
            top1 = logits_fidelity(reference, fast(ids, cache=cache))["top1_agreement"]
        layer = model.get_submodule(names[0])
        print(f"{key} x{len(names)} ({layer.in_features}->{layer.out_features}): top-1 {top1:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="amused-256")
    parser.add_argument("--model", default=None, help="a model folder, or 'bundled', instead of random aMUSEd weights")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is None:
        config, _, ours = random_models(args.preset)
        cache, probe = probe_inputs(config, ours, 1)
        sensitivity(args.preset, ours, probe, cache)
        return
    from musekit.pipeline import MusePipeline

    pipe = MusePipeline.from_pretrained(None if args.model == "bundled" else args.model)
    for name, (model, ids, cache) in stage_inputs(pipe).items():
        sensitivity(name, model, ids, cache)


if __name__ == "__main__":
    main()
