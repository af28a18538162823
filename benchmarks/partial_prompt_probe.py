"""Prompts that leave attributes out ("a red circle", "a star above a green heart"), read by the checker.

Every training caption of the shapes world used to name every attribute of its scene (size, colour, position and
background of one object; both colours, the relation and the background of two), so a model trained on them alone
meets a shorter prompt only at sampling time. For ``--num`` validation scenes (training attribute combinations) this
prompts ``musekit.data.shapes.partial_caption`` (each attribute but the shapes left out with probability 1/2; fixed
seed), generates one image per prompt and reports, on one- and two-object prompts:

- count: the checker reads as many objects as the prompt names;
- followed: count, shapes (and relation) and every attribute the prompt names are read right;
- per attribute, over the prompts that name it.

Usage: python benchmarks/partial_prompt_probe.py [MODEL] [--num 240] [--batch 8] [--full] [--threads 2]
(--full prompts each scene's full canonical caption instead, for comparison).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from musekit.data.renders import labels_of
from musekit.data.shapes import IGNORE, ShapesWorld, partial_caption_and_names
from musekit.eval.checker import load_checker
from musekit.pipeline import MusePipeline

ATTRIBUTES = ("count", "color", "shape", "position", "size", "background", "relation", "color2", "shape2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--num", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--start", type=int, default=0, help="index of the first validation scene")
    parser.add_argument("--full", action="store_true", help="prompt the full canonical captions instead")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    checker = load_checker()
    examples = ShapesWorld(0).examples("val", args.num, args.start)
    rng = np.random.default_rng(0)
    prompts, named = [], []
    for example in examples:
        text, names = partial_caption_and_names(example.scene, rng)
        two = example.scene.relation is not None
        if args.full:
            text = example.scene.canonical_caption()
            names = {"count", "color", "shape", "background"}
            names |= {"relation", "color2", "shape2"} if two else {"position", "size"}
        prompts.append(text)
        named.append(names)
    labels = labels_of(examples)
    began = time.perf_counter()
    images = []
    for start in range(0, args.num, args.batch):
        generator = torch.Generator().manual_seed(start)
        images.append(pipe(prompts[start : start + args.batch], generator=generator, output_type="pt").images)
    seconds = (time.perf_counter() - began) / args.num
    predicted = checker.predict(torch.cat(images))
    two = torch.tensor([e.scene.relation is not None for e in examples])
    print(
        f"{'full captions' if args.full else 'partial captions'}, {args.num} validation scenes, {seconds:.3f} s/image"
    )
    print("examples:", "; ".join(repr(p) for p in prompts[:4]))
    for kind, rows in (("one-object", ~two), ("two-object", two)):
        index = rows.nonzero().flatten().tolist()
        right = {a: [] for a in ATTRIBUTES}
        followed = counted = 0
        for i in index:
            ok = {a: bool(predicted[a][i] == labels[a][i]) for a in named[i] if labels[a][i] != IGNORE}
            for a, value in ok.items():
                right[a].append(value)
            followed += all(ok.values())
            counted += ok["count"]
        per = ", ".join(f"{a} {sum(v) / len(v):.1%} of {len(v)}" for a, v in right.items() if v)
        n = max(1, len(index))
        print(f"{kind} ({len(index)}): count {counted / n:.1%}, followed {followed / n:.1%}; {per}", flush=True)


if __name__ == "__main__":
    main()
