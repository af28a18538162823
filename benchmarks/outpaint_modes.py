"""Outpainting modes on shapes-world scenes, read by the checker: "window" (musekit's default: model-size windows
at the image's scale), "fit" (the whole canvas scaled to the model, one window) and "squash" (the enlarged canvas
resized to the model's square, aspect ratio lost: musekit's outpainting before windows, run here as an
inpainting call on the enlarged canvas).

Cases, on one-object validation scenes with plain backgrounds (as `musekit eval edit`):
* add: extend to the right by the image's width with "a {colour} {shape} on a {background} background" (a new
  object); success = the checker reads that colour, shape and background in the new half; objects = the mean
  number of blobs drawn there (connected regions of at least 30 px that differ from the background colour by more
  than 60/255 in some channel; the prompt asks for one).
* strip: extend to the right by a quarter with the scene's caption (`musekit eval edit`'s case); success = the
  background is read in the new strip.
* around: extend by a quarter on every side with the scene's caption; clean = share of the new area's pixels
  within 40/255 of the background colour in every channel (stray or cut objects lower it).

    python benchmarks/outpaint_modes.py --num 40
    python benchmarks/outpaint_modes.py --grid docs/images/outpaint-modes.png  # the picture only (4 scenes)
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
import torch.nn.functional as F

from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import BACKGROUNDS, COLORS, GRAY, SHAPES, Example
from musekit.eval.checker import load_checker
from musekit.eval.edit_eval import COLOR_NAMES, one_object_scenes
from musekit.pipeline import MusePipeline


def outpaint(pipe, mode: str, image: torch.Tensor, prompt: str, pad: tuple[int, int, int, int], seed: int):
    """``mode``: window, fit (musekit's modes) or squash."""
    generator = torch.Generator().manual_seed(seed)
    if mode != "squash":
        return pipe.outpaint(image, prompt, pad=pad, mode=mode, generator=generator, output_type="pt").images
    left, top, right, bottom = pad
    canvas = F.pad(image, (left, right, top, bottom), mode="replicate")
    mask = torch.ones(1, 1, *canvas.shape[-2:], dtype=torch.bool)
    mask[..., top : top + image.shape[-2], left : left + image.shape[-1]] = False
    return pipe.inpaint(canvas, mask, prompt, generator=generator, output_type="pt").images


def added_object(scene, k: int) -> tuple[str, str, str]:
    """The colour, shape and prompt of the object that the "add" case asks for."""
    color = [c for c in COLOR_NAMES if c not in (scene.background, scene.objects[0].color)][k % 6]
    shape = SHAPES[k % len(SHAPES)]
    return color, shape, f"a {color} {shape} on a {scene.background} background"


def grid(pipe, scenes, modes: list[str], path: str) -> None:
    """Rows = scenes; per mode, the "add" case (extended by the width) and the "around" case (a quarter a side)."""
    from PIL import Image, ImageDraw, ImageFont

    from musekit.io.images import tensor_to_pil

    size, gap, head = pipe.image_size, 6, 18
    cell = 2 * size + gap + size * 3 // 2 + 3 * gap
    sheet = Image.new("RGB", (len(modes) * cell, head + len(scenes) * (size * 3 // 2 + gap)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=13)
    for m, mode in enumerate(modes):
        draw.text((m * cell, 2), f"{mode}: add (+{size} px right) | around (+{size // 4} px a side)", "black", font)
    for k, scene in enumerate(scenes):
        image = to_float(render_examples([Example(scene, scene.canonical_caption())], size))
        y = head + k * (size * 3 // 2 + gap)
        for m, mode in enumerate(modes):
            add = outpaint(pipe, mode, image, added_object(scene, k)[2], (0, 0, size, 0), k)
            around = outpaint(pipe, mode, image, scene.canonical_caption(), (size // 4,) * 4, k)
            sheet.paste(tensor_to_pil(add)[0], (m * cell, y))
            sheet.paste(tensor_to_pil(around)[0], (m * cell + 2 * size + gap, y))
    sheet.save(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--num", type=int, default=40)
    parser.add_argument("--modes", default="window,fit,squash")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="add,strip,around")
    parser.add_argument("--grid", default=None, metavar="PNG", help="only draw the add and around cases of 4 scenes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("musekit").setLevel(logging.ERROR)  # squash's resize warning
    pipe = MusePipeline.from_pretrained(args.model) if args.model else MusePipeline.from_pretrained()
    pipe.progress_bar = False
    checker = load_checker()
    size = pipe.image_size
    scenes = one_object_scenes(args.num, 0)
    if args.grid:
        return grid(pipe, scenes[:4], args.modes.split(","), args.grid)
    cases = args.cases.split(",")
    for mode in args.modes.split(","):
        row = {"mode": mode, "scenes": len(scenes)}
        scores = {"add_read": [], "add_objects": [], "strip_background_read": [], "around_clean": []}
        seconds, calls = 0.0, 0
        for k, scene in enumerate(scenes):
            image = to_float(render_examples([Example(scene, scene.canonical_caption())], size))
            background = torch.tensor(COLORS.get(scene.background, GRAY), dtype=torch.float32).view(3, 1, 1) / 255
            quarter = size // 4
            start = time.perf_counter()
            if "add" in cases:
                color, shape, prompt = added_object(scene, k)
                out = outpaint(pipe, mode, image, prompt, (0, 0, size, 0), k)
                pred = checker.predict(out[..., size:])
                scores["add_read"].append(COLOR_NAMES[pred["color"][0]] == color and SHAPES[pred["shape"][0]] == shape
                                          and BACKGROUNDS[pred["background"][0]] == scene.background)  # fmt: skip
                scores["add_objects"].append(blobs(out[0, :, :, size:], background))
            if "strip" in cases:
                out = outpaint(pipe, mode, image, scene.canonical_caption(), (0, 0, quarter, 0), k)
                new = F.interpolate(out[..., size:], size=(size, size), mode="bilinear", antialias=True)
                scores["strip_background_read"].append(
                    BACKGROUNDS[checker.predict(new)["background"][0]] == scene.background
                )
            if "around" in cases:
                out = outpaint(pipe, mode, image, scene.canonical_caption(), (quarter,) * 4, k)
                new_area = torch.ones(out.shape[-2:], dtype=torch.bool)
                new_area[quarter:-quarter, quarter:-quarter] = False
                close = ((out[0][:, new_area] - background.view(3, 1)).abs() <= 40 / 255).all(0)
                scores["around_clean"].append(close.float().mean().item())
            seconds += time.perf_counter() - start
            calls += len(cases)
        row.update({name: sum(map(float, v)) / len(v) for name, v in scores.items() if v})
        row["seconds_per_call"] = seconds / calls
        print(json.dumps(row), flush=True)


def blobs(image: torch.Tensor, background: torch.Tensor, min_area: int = 30) -> int:
    """Connected regions of (3, H, W) ``image`` that differ from ``background`` (3, 1, 1) by more than 60/255."""
    from scipy import ndimage

    labels, count = ndimage.label(((image - background).abs() > 60 / 255).any(0).numpy())
    areas = ndimage.sum_labels(labels > 0, labels, range(1, count + 1)) if count else []
    return int(sum(area >= min_area for area in areas))


if __name__ == "__main__":
    main()
