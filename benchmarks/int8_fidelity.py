"""CPU fast paths on a model folder: logit fidelity against fp32 at a fixed half-masked input, per stage and path
(``MusePipeline.quantize`` kinds: int8 feed-forward linears, int8 every per-step linear, bf16 products in all but the
sensitive linears; and the bf16 per-step forward).

Usage: python benchmarks/int8_fidelity.py [MODEL_DIR] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from musekit.models.half import HalfPrecisionModel
from musekit.models.quantize import QUANTIZATIONS, logits_fidelity, swap_step_linears
from musekit.pipeline import MusePipeline

PROMPTS = [
    "a large red circle in the center on a blue background",
    "a small green star at the top left on a striped background",
    "a yellow heart left of a purple cross on a gray background",
    "a white square",
]


def stage_inputs(pipe) -> dict:
    """Per stage of ``pipe``: (model, half-masked random ids, its text cache), the fixed input of the comparisons
    (``PROMPTS`` with guidance, seed 0)."""
    text = pipe.encode_prompt(PROMPTS)
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for name, model in {"transformer": pipe.transformer, "superres": pipe.superres}.items():
        if model is None:
            continue
        side = model.config.grid_size
        ids = torch.randint(0, model.config.codebook_size, (len(text), side, side), generator=g)
        ids[torch.rand(ids.shape, generator=g) < 0.5] = model.config.mask_token_id
        cond = None
        if name == "superres":
            low = model.config.cond_grid_size
            cond = torch.randint(0, model.config.cond_codebook_size, (len(text), low, low), generator=g)
        with torch.no_grad():
            inputs[name] = (model, ids, model.precompute(text, cond))
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    with torch.no_grad():
        for name, (model, ids, cache) in stage_inputs(pipe).items():
            reference = model(ids, cache=cache)
            for kind, (scope, linear) in QUANTIZATIONS.items():
                fast = swap_step_linears(model, lambda m, ids=ids, cache=cache: m(ids, cache=cache), scope, linear)
                print(name, kind, logits_fidelity(reference, fast(ids, cache=cache)), flush=True)
            half = HalfPrecisionModel(model, "bf16")
            print(name, "bf16", logits_fidelity(reference, half(ids, cache=half.cast(cache))))


if __name__ == "__main__":
    main()
