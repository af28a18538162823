"""Tokenizer quality on held-out renders: PSNR at the base (64 px) and final (128 px) resolution, and whether the
bundled checker reads the reconstructions as well as the originals (per attribute: original, reconstruction), and
the median number of distinct codes per token grid (fewer: a simpler code space for the transformer).

Usage: python benchmarks/tokenizer_quality.py --tokenizer runs/tok/final --num 200 [--threads 1]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from musekit.config import VQConfig
from musekit.data.renders import labels_of, render_examples, to_float
from musekit.data.shapes import ShapesWorld
from musekit.eval import load_checker
from musekit.eval.checker import attribute_accuracy
from musekit.eval.metrics import psnr
from musekit.io.checkpoint import load_component
from musekit.tokenizer import VQModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizer", default="src/musekit/assets/default/vqgan")
    parser.add_argument("--num", type=int, default=200, help="examples per split (heldout and heldout2)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vq = load_component(VQModel, VQConfig, args.tokenizer)
    checker = load_checker()
    world = ShapesWorld(0)
    examples = world.examples("heldout", args.num) + world.examples("heldout2", args.num)
    full = to_float(render_examples(examples, 128))
    labels = labels_of(examples)
    small = F.interpolate(full, size=(64, 64), mode="bilinear", antialias=True)
    for name, images in (("64px", small), ("128px", full)):
        with torch.no_grad():
            ids = torch.cat([vq.encode(images[i : i + 50]) for i in range(0, len(images), 50)])
            recon = torch.cat([vq.decode(ids[i : i + 50]) for i in range(0, len(ids), 50)])
        original = attribute_accuracy(checker.predict(images), labels)
        reconstructed = attribute_accuracy(checker.predict(recon), labels)
        distinct = sorted(int(grid.unique().numel()) for grid in ids)[len(ids) // 2]
        row = {"resolution": name, "images": len(images), "psnr_db": round(psnr(recon, images).item(), 2),
               "distinct_codes_per_grid_median": distinct,
               "checker": {k: [round(original[k], 3), round(reconstructed[k], 3)] for k in original}}  # fmt: skip
        print(json.dumps(row))


if __name__ == "__main__":
    main()
