"""How much of a concept the bundled model's tokens can carry: concept similarity of the evaluation concepts' own
renders after each stage's tokenizer, and after the super-resolution stage when the base stage's tokens are exactly
the concept's (what a method that taught the base transformer the concept perfectly would reach).

Usage: python benchmarks/concept_ceiling.py [--threads 2] [--out runs/diag]

For each concept, the one-object prompts' positions and backgrounds of `musekit eval personalize` (its "truth" bound)
are rendered and scored with the harness's `region_embeddings` against the concept's 5 training images: the renders
themselves, the final (SR) tokenizer's reconstruction, the base tokenizer's 64 px reconstruction upsampled, and the SR
stage run on the renders' base tokens with the superclass prompt. Writes one PNG per concept (rows in that order).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from musekit.data.concepts import CONCEPTS, concept_examples, concept_scene
from musekit.editing.inpaint import encode_stages
from musekit.editing.masks import image_to_tensor
from musekit.eval.checker import load_checker
from musekit.eval.personalize_eval import prompts_for, region_embeddings
from musekit.io.images import tensor_to_pil
from musekit.pipeline import MusePipeline
from musekit.sampling.options import SamplingOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/diag")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pipe = MusePipeline.from_pretrained()
    pipe.progress_bar = False
    checker = load_checker()
    for name in ("bullseye", "diamond", "crescent"):
        examples = concept_examples(name, 5, pipe.image_size, 0)
        refs = region_embeddings(checker, torch.cat([image_to_tensor(e[0]) for e in examples]),
                                 [e[1] for e in examples])  # fmt: skip
        specs = [s for _, s in prompts_for(f"<{name}>", name) if "color2" not in s]
        renders = torch.cat([image_to_tensor(concept_scene(name, s["position"], s["background"])) for s in specs])
        positions = [s["position"] for s in specs]
        base, high = encode_stages(pipe, renders)
        where = ["in the center" if s["position"] == "center" else f"at the {s['position']}" for s in specs]
        prompts = [f"a {CONCEPTS[name]['superclass']} {w} on a {s['background']} background"
                   for w, s in zip(where, specs)]  # fmt: skip
        options = SamplingOptions.resolve(pipe.config)
        with torch.no_grad():
            text = pipe.encode_prompt(prompts, None, 1, options.guidance_scale)
            rows = {
                "renders": renders,
                "final tokenizer": pipe.decode(high),
                "base tokenizer": F.interpolate(pipe.vqgan.decode(base), size=renders.shape[-1], mode="bilinear"),
                "SR from the renders' base tokens": pipe.decode(
                    pipe.super_resolve(base, text, len(prompts), options, torch.Generator().manual_seed(0))
                ),
            }
        for label, images in rows.items():
            similarity = (region_embeddings(checker, images, positions) @ refs.t()).mean().item()
            print(f"{name}: {label}: concept similarity {similarity:.3f}", flush=True)
        grid = torch.cat([torch.cat(list(images[:4].clamp(0, 1)), -1) for images in rows.values()], -2)
        tensor_to_pil(grid[None])[0].save(Path(args.out) / f"ceiling-{name}.png")


if __name__ == "__main__":
    main()
