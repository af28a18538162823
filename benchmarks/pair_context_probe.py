"""Experiment (its recipe not adopted; docs/BENCHMARKS.md): learn each evaluation concept from its 5 images plus 5
composites in pair context ("a <c> left of a blue square on a gray background": the object cropped from each
training image, scaled to pair size and pasted in a left or right cell of a random row beside a plain shapes-world
object that is not the concept's superclass), then score the two-concept rate (isolated encoding, beta 0.8, 12
images per prompt) and each concept alone (the eval's score). Saves the composites' grid to
runs/pair-context-composites.png.

    python benchmarks/pair_context_probe.py
"""

import re
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from concept_probe_setup import examples_and_references, load_pipeline_and_checker  # noqa: E402
from two_concept_probe import pair_prompts, pair_score  # noqa: E402

from musekit.data.concepts import CONCEPTS  # noqa: E402
from musekit.data.drawing import render  # noqa: E402
from musekit.data.shapes import _GRID, COLORS, SHAPES, SIZE_RADIUS, Scene, ShapeObject, with_articles  # noqa: E402
from musekit.editing.masks import image_to_tensor  # noqa: E402
from musekit.eval.personalize_eval import generate, score  # noqa: E402
from musekit.personalize.trainer import PersonalizeConfig  # noqa: E402


def centre_of(x):
    image = x[0]
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)
    d = (image - border.median(dim=1).values[:, None, None]).norm(dim=0)
    w = d * (d >= 0.5 * d.max())
    ys, xs = torch.arange(d.shape[0]).float(), torch.arange(d.shape[1]).float()
    return float((w.sum(0) * xs).sum() / w.sum()), float((w.sum(1) * ys).sum() / w.sum())


def composite(image, caption, token, rng, superclass):
    size = image.size[0]
    large = "large" in caption
    background = re.search(r"on an? (\w+) background", caption).group(1)
    cx, cy = centre_of(image_to_tensor(image))
    half = int(SIZE_RADIUS["large" if large else "small"] * size * 1.25)
    fill = image.getpixel((0, 0))
    padded = Image.new("RGB", (size + 4 * half, size + 4 * half), fill)  # outside the image: its background
    padded.paste(image, (2 * half, 2 * half))
    crop = padded.crop((int(cx) + half, int(cy) + half, int(cx) + 3 * half, int(cy) + 3 * half))
    factor = SIZE_RADIUS["pair"] / SIZE_RADIUS["large" if large else "small"]
    crop = crop.resize((max(1, round(2 * half * factor)),) * 2, Image.Resampling.LANCZOS)
    row = ["top ", "", "bottom "][int(rng.integers(3))]
    concept_left = bool(rng.integers(2))
    while True:
        colour = [c for c in COLORS if c != background][int(rng.integers(len(COLORS) - 1))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if f"{colour} {shape}" != superclass:
            break
    other = f"{row}{'right' if concept_left else 'left'}"
    canvas = render(Scene((ShapeObject(shape, colour, "pair", other),), background), size)
    col = 0 if concept_left else 2
    r = ["top ", "", "bottom "].index(row)
    px, py = int(_GRID[col] * size) - crop.size[0] // 2, int(_GRID[r] * size) - crop.size[1] // 2
    canvas.paste(crop, (px, py))
    plain = f"{colour} {shape}"
    text = f"a {{}} left of a {plain}" if concept_left else f"a {plain} left of a {{}}"
    return canvas, with_articles(f"{text} on a {background} background")


pipe, checker = load_pipeline_and_checker(2)
names = ["bullseye", "diamond", "crescent"]
examples, refs = examples_and_references(pipe, checker, names)
rng = np.random.default_rng(0)
concepts = {}
grid = []
for n in names:
    images = [im for im, _, _ in examples[n]]
    captions = [c for _, _, c in examples[n]]
    comps = [composite(im, c, f"<{n}>", rng, CONCEPTS[n]["superclass"]) for im, c in zip(images, captions)]
    grid += [image_to_tensor(im) for im, _ in comps]
    print(n, [c for _, c in comps], flush=True)
    concepts[n] = pipe.learn_concept(
        images + [im for im, _ in comps],
        f"<{n}>",
        CONCEPTS[n]["superclass"],
        config=PersonalizeConfig(),
        progress=False,
        captions=captions + [c for _, c in comps],
    )
g = torch.cat(grid).view(3, 5, 3, 128, 128).permute(0, 3, 1, 4, 2).reshape(384, 640, 3)
__import__("pathlib").Path("runs").mkdir(exist_ok=True)
Image.fromarray((g * 255).byte().numpy()).save("runs/pair-context-composites.png")
extra = dict(concept_bias=0.8)
sims, fids = [], []
for n in names:
    r = score(pipe, checker, f"<{n}>", n, refs[n], 0, 2, concepts=[concepts[n]], **extra)
    sims.append(r["concept_similarity"])
    fids.append(r["text_fidelity"])
print(f"single: similarity {sum(sims) / 3:.3f} {[round(s, 3) for s in sims]} fidelity {sum(fids) / 3:.3f}", flush=True)
total = []
for a in names:
    for b in names:
        if a == b:
            continue
        images = generate(
            pipe, pair_prompts(a, b, f"<{a}>", f"<{b}>"), 0, 12, concepts=[concepts[a], concepts[b]], **extra
        )
        ok = pair_score(checker, images, refs[a], refs[b])
        total += ok
        print(f"{a}+{b}: {sum(ok) / len(ok):.3f}", flush=True)
print(f"mean: {sum(total) / len(total):.3f}")
