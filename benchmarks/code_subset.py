"""How much of the tokenizer's codebook the base stage needs: reconstruction PSNR and the checker on 64 px held-out
renders tokenized with k codes, chosen as the k most used codes or by ``select_codes`` (usage-weighted k-means);
usage counted over the base ids of the token shards. Also the distinct codes per base grid.

Usage: python benchmarks/code_subset.py --tokenizer runs/tok/final --shards runs/shards [--k 64,128,256]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from musekit.config import VQConfig
from musekit.data.renders import labels_of
from musekit.data.shapes import ShapesWorld
from musekit.data.tokens import TokenShards, render_stages
from musekit.eval import load_checker
from musekit.eval.checker import attribute_accuracy
from musekit.eval.metrics import psnr
from musekit.io.checkpoint import load_component
from musekit.tokenizer import VQModel, code_usage, select_codes

READ = ("color", "shape", "position", "size", "background", "color2", "shape2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--k", default="64,128,256")
    parser.add_argument("--num", type=int, default=150, help="held-out one-object renders (and 2/3 as many pairs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vq = load_component(VQModel, VQConfig, args.tokenizer)
    checker = load_checker()
    shards = TokenShards(args.shards)
    size = vq.config.codebook_size
    usage = code_usage(shards.ids_lo, size)
    world = ShapesWorld(shards.meta["world_seed"])
    examples = world.examples("heldout", args.num) + world.examples("heldout2", 2 * args.num // 3)
    labels = labels_of(examples)
    small = render_stages(examples, shards.meta["image_size"])[1]
    original = attribute_accuracy(checker.predict(small), labels)
    print(json.dumps({"images": len(small), "checker_on_originals": {k: round(original[k], 3) for k in READ}}))
    choices = [("all", torch.arange(size))]
    for k in map(int, args.k.split(",")):
        choices.append((f"top-{k} by usage", usage.argsort(descending=True, stable=True)[:k]))
        choices.append((f"k-means {k}", select_codes(vq.quantizer.codebook(), usage, k)))
    for label, codes in choices:
        with torch.no_grad():
            ids = torch.cat([vq.encode(small[i : i + 50], codes) for i in range(0, len(small), 50)])
            recon = torch.cat([vq.decode(ids[i : i + 50]) for i in range(0, len(ids), 50)])
        read = attribute_accuracy(checker.predict(recon), labels)
        distinct = [int(grid.unique().numel()) for grid in ids]
        print(json.dumps({"codes": label, "k": len(codes), "psnr_db": round(psnr(recon, small).item(), 2),
                          "distinct_per_grid_median": int(np.median(distinct)),
                          "checker": {k: round(read[k], 3) for k in READ}}))  # fmt: skip


if __name__ == "__main__":
    main()
