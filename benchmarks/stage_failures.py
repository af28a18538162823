"""Which stage loses an object's shape: the checker's shape read of the same base tokens at three points.

Usage: python benchmarks/stage_failures.py [MODEL_DIR] [--split heldout] [--start 0] [--num 240] [--out PNG]

For each scene (canonical caption, batch k of 8 seeded with k's first index, as `sampling_probe.py`), the base stage
draws its tokens once; the checker then reads
* ``base``: the base tokens decoded at the base resolution (what `sampling_probe.py --base-only` reads),
* ``retok``: that image upsampled and re-tokenized by the super-resolution tokenizer, nothing redrawn (sr_strength 0),
* ``final``: the super-resolution stage at the model's default strength, starting from those same tokens.
Prints the shape accuracy of each, how many scenes the redraw breaks and mends relative to ``retok``, and one line per
scene that any of them gets wrong; ``--out`` writes those scenes as rows of (base, retok, final) at 128 px.
"""

from __future__ import annotations

import argparse

import torch

from musekit.data.renders import labels_of
from musekit.data.shapes import LABEL_SPACES, ShapesWorld
from musekit.editing.masks import resize
from musekit.eval.checker import load_checker
from musekit.io.images import make_grid, save_image, tensor_to_pil
from musekit.pipeline import MusePipeline
from musekit.sampling.options import SamplingOptions

STAGES = ("base", "retok", "final")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default=None, help="model folder (default: the bundled model)")
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--num", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="PNG of the scenes that any stage gets wrong")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    checker = load_checker()
    examples = ShapesWorld(0).examples(args.split, args.num, args.start)
    captions = [e.scene.canonical_caption() for e in examples]
    options = SamplingOptions.resolve(pipe.config)
    images = {stage: [] for stage in STAGES}
    for start in range(0, args.num, args.batch):
        prompts = captions[start : start + args.batch]
        generator = torch.Generator().manual_seed(start)
        text = pipe.encode_prompt(prompts)
        base_ids = pipe.generate_tokens(pipe.transformer, text, len(prompts), options, generator)
        base = pipe.vqgan.decode(base_ids).clamp(0, 1)
        images["base"].append(base)
        retok = pipe.sr_tokenizer.encode(resize(base, pipe.image_size))
        images["retok"].append(pipe.sr_tokenizer.decode(retok).clamp(0, 1))
        final = pipe.super_resolve(base_ids, text, len(prompts), options, generator)
        images["final"].append(pipe.sr_tokenizer.decode(final).clamp(0, 1))
    images = {stage: torch.cat(rows) for stage, rows in images.items()}
    truth = labels_of(examples)["shape"]
    read = {stage: checker.predict(batch)["shape"] for stage, batch in images.items()}
    right = {stage: read[stage] == truth for stage in STAGES}
    for stage in STAGES:
        print(f"{stage}: shape {right[stage].float().mean().item():.1%} of {args.num}")
    broken = int((right["retok"] & ~right["final"]).sum())
    mended = int((~right["retok"] & right["final"]).sum())
    print(f"the super-resolution redraw breaks {broken} and mends {mended} of the re-tokenized scenes")
    names = LABEL_SPACES["shape"]
    wrong = [i for i in range(args.num) if not all(bool(right[s][i]) for s in STAGES)]
    for i in wrong:
        print(f"{args.start + i:5d} {captions[i]}: " + ", ".join(f"{s} {names[read[s][i]]}" for s in STAGES))
    if args.out and wrong:
        tiles = [resize(images[s][i : i + 1], pipe.image_size)[0] for i in wrong for s in STAGES]
        save_image(make_grid(tensor_to_pil(torch.stack(tiles)), columns=len(STAGES)), args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
