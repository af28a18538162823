"""The README's picture: what the bundled model does, each image labelled with its prompt (fixed seeds).

Usage: python benchmarks/readme_gallery.py [--out docs/images/readme-gallery.png] [--threads 2]
Row 1: text to image. Row 2: editing a generated scene (inpaint, outpaint, mask-free edit). Row 3: a Perfusion
concept learned from 5 renders (one shown) and used in prompts. About 1.5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import textwrap
import time

import torch
from PIL import Image, ImageDraw, ImageFont

from musekit import MusePipeline
from musekit.data.concepts import concept_examples
from musekit.io.images import save_image

PROMPTS = [
    "a large red circle in the center on a blue background",
    "a small yellow star at the top left on a gray background",
    "a green triangle left of a white square on a black background",
    "a small purple heart at the bottom right on a checkered background",
]
SCENE = "a large blue square in the center on a yellow background"
OUTPAINT = "a small red star at the right on a yellow background"
INPAINT = "a large red heart in the center on a yellow background"  # the bundled model reads whole captions
TILE = 160  # each image is shown at this height
LABEL = 56  # pixels of caption under each image


def tile(image: Image.Image, text: str, font) -> Image.Image:
    """``image`` scaled to TILE px high (nearest: the pixels as generated) with ``text`` wrapped below it."""
    width = round(image.width * TILE / image.height)
    out = Image.new("RGB", (max(width, TILE), TILE + LABEL), "white")
    out.paste(image.resize((width, TILE), Image.NEAREST), ((out.width - width) // 2, 0))
    lines = textwrap.wrap(text, width=max(18, out.width // 7))[:4]
    ImageDraw.Draw(out).multiline_text((3, TILE + 2), "\n".join(lines), fill="black", font=font, spacing=1)
    return out


def row(tiles: list[Image.Image], title: str, font, width: int) -> Image.Image:
    out = Image.new("RGB", (width, tiles[0].height + 22), "white")
    ImageDraw.Draw(out).text((4, 3), title, fill=(40, 40, 40), font=font)
    x = 4
    for t in tiles:
        out.paste(t, (x, 22))
        x += t.width + 6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/images/readme-gallery.png")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    font, title = ImageFont.load_default(size=11), ImageFont.load_default(size=14)
    pipe = MusePipeline.from_pretrained()
    pipe.progress_bar = False

    def seeded(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    rows = [[tile(pipe(p, generator=seeded()).images[0], p, font) for p in PROMPTS]]

    scene = pipe(SCENE, generator=seeded()).images[0]
    mask = Image.new("L", scene.size, 0)
    low, high = round(scene.width * 0.28), round(scene.width * 0.72)
    mask.paste(255, (low, low, high, high))  # the centre, the whole object (a cell alone leaves its edges)
    shown_mask = Image.composite(Image.new("RGB", scene.size, (255, 0, 255)), scene, mask.point(lambda v: v // 2))
    rows.append([
        tile(scene, SCENE, font),
        tile(shown_mask, f"inpaint the magenta area: \"{INPAINT}\"", font),
        tile(pipe.inpaint(scene, mask, INPAINT, generator=seeded()).images[0], "result", font),
        tile(pipe.outpaint(scene, OUTPAINT, pad=(0, 0, 64, 0), generator=seeded()).images[0],
             f"outpaint 64 px to the right: \"{OUTPAINT}\"", font),  # fmt: skip
        tile(pipe.edit(scene, SCENE.replace("blue square", "red circle"), source_prompt=SCENE, generator=seeded())
             .images[0], "mask-free edit: \"... a large red circle ...\"", font),  # fmt: skip
    ])  # fmt: skip

    examples = concept_examples("bullseye", 5)
    concept = pipe.learn_concept([image for image, _, _ in examples], "<bull>", "red circle", progress=False)
    personal = [
        "a <bull> at the top left on a blue background",
        "a <bull> left of a green star on a gray background",
        "a <bull> in the center on a yellow background",
    ]
    rows.append(
        [tile(examples[0][0], 'one of 5 concept images (learned as <bull>, superclass "red circle")', font)]
        + [tile(pipe(p, concepts=[concept], generator=seeded()).images[0], p, font) for p in personal]
    )
    titles = ["text to image", "editing (no inversion, no fine-tuning)", "personalization (Perfusion, 16 KB)"]
    width = max(sum(t.width + 6 for t in r) + 4 for r in rows)
    parts = [row(r, name, title, width) for r, name in zip(rows, titles)]
    figure = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    y = 0
    for part in parts:
        figure.paste(part, (0, y))
        y += part.height
    save_image(figure, args.out)
    print(f"wrote {args.out} ({figure.width}x{figure.height}) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
