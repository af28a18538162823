"""Image-to-image and mask-free editing of non-square images, read by the checker: "window" (musekit's default for
both: the image's shorter side at the model's size, model-size windows redrawn from the middle outward) and
"squash" (the image resized to the model's square and the result stretched back: musekit's only way before),
against the same edit of the square scene alone ("square": what the model does
without any of this). `--modes letterbox` needs an experiment version of musekit that had it (the image scaled so
its longer side is the model's size, the rest filled; not kept).

Cases, on the one-object validation scenes of `musekit eval edit` (plain backgrounds): each 128 px render is widened
to ``--aspect`` x 128 px by repeating its edge pixels on both sides (``--place middle``) or on the right
(``--place left``; the background continues), then edited as
`musekit eval edit` edits it: img2img at strength 0.5 towards the caption with the colour, shape or background
changed (in turn), and the region edit (`--source-prompt`, 30 iterations) changing the colour or the shape. The
checker reads the scene's own 128 px square of the result: img2img follows / kept / clean as in `musekit eval
edit`; the edit's changed attribute and kept position and background. Proportions: the bounding box of the largest
region that differs from the background by more than 60/255, its log aspect ratio against that of a render of the
target scene (0 = drawn in the scene's proportions; a 1.5x stretch is 0.41). Margins: the share of the pixels
outside the scene's square within 40/255 of the background the prompt names (stray objects lower it).

    python benchmarks/non_square_edits.py --num 60 --aspect 1.5
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time

import torch
import torch.nn.functional as F

from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import COLORS, GRAY, Example
from musekit.editing.masks import resize
from musekit.eval.checker import load_checker
from musekit.eval.edit_eval import IMG2IMG_CHANGES, changed, img2img_verdict, one_object_scenes, read_values
from musekit.pipeline import MusePipeline

MODES = ("window", "squash", "square")


def widen(image: torch.Tensor, width: int, place: str = "middle") -> tuple[torch.Tensor, int]:
    """(1, 3, S, S) -> ((1, 3, S, width), the scene's left edge): edge pixels repeated on both sides (``place``
    "middle") or on the right only ("left")."""
    extra = width - image.shape[-1]
    left = extra // 2 if place == "middle" else 0
    return F.pad(image, (left, extra - left, 0, 0), mode="replicate"), left


def run_edit(pipe, mode: str, method: str, image: torch.Tensor, prompt: str, source: str, seed: int) -> torch.Tensor:
    """One edit of ``image`` under ``mode``: window (musekit's), squash (resized to the square and back here), square
    (the square scene alone)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = image.shape[-2:]
    model_input = resize(image, pipe.image_size) if mode == "squash" else image
    extra = {"mode": mode} if mode == "window" else {}
    if method == "img2img":
        out = pipe.img2img(model_input, prompt, strength=0.5, generator=generator, output_type="pt", **extra).images
    else:
        out = pipe.edit(model_input, prompt, iterations=30, source_prompt=source, generator=generator,
                        output_type="pt", **extra).images  # fmt: skip
    return resize(out, (height, width)) if mode == "squash" else out


def log_aspect(image: torch.Tensor, background: torch.Tensor) -> float | None:
    """log(width / height) of the bounding box of the largest region of (3, H, W) ``image`` that differs from
    ``background`` (3,) by more than 60/255; None if there is none."""
    from scipy import ndimage

    labels, count = ndimage.label(((image - background.view(3, 1, 1)).abs() > 60 / 255).any(0).numpy())
    if count == 0:
        return None
    sizes = ndimage.sum_labels(labels > 0, labels, range(1, count + 1))
    rows, cols = ndimage.find_objects(labels)[int(sizes.argmax())]
    return math.log((cols.stop - cols.start) / (rows.stop - rows.start))


def colour(name: str) -> torch.Tensor:
    return torch.tensor(COLORS.get(name, GRAY), dtype=torch.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--num", type=int, default=60)
    parser.add_argument("--aspect", type=float, default=1.5, help="width / height of the widened images")
    parser.add_argument("--place", choices=("middle", "left"), default="middle",
                        help="where the scene lies in the widened image (middle: img2img's first window is the "
                        "scene itself)")  # fmt: skip
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--methods", default="img2img,edit")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("musekit").setLevel(logging.ERROR)  # the "processed at the model's size" warnings
    pipe = MusePipeline.from_pretrained(args.model) if args.model else MusePipeline.from_pretrained()
    pipe.progress_bar = False
    checker = load_checker()
    size = pipe.image_size
    width = round(size * args.aspect)
    scenes = one_object_scenes(args.num, 0)
    for method in args.methods.split(","):
        for mode in args.modes.split(","):
            scores: dict[str, list[float]] = {}
            seconds = 0.0
            for k, scene in enumerate(scenes):
                kind = IMG2IMG_CHANGES[k % 3] if method == "img2img" else ("color", "shape")[k % 2]
                target = changed(scene, k, kind)
                image = to_float(render_examples([Example(scene, scene.canonical_caption())], size))
                wide, left = widen(image, width, args.place)
                start = time.perf_counter()
                out = run_edit(pipe, mode, method, image if mode == "square" else wide, target.canonical_caption(),
                               scene.canonical_caption(), k)  # fmt: skip
                seconds += time.perf_counter() - start
                square = out if mode == "square" else out[..., left : left + size]
                got = read_values(checker.predict(square))
                if method == "img2img":
                    for key, ok in img2img_verdict(got, scene, target, kind).items():
                        scores.setdefault(key, []).append(float(ok))
                else:
                    obj = target.objects[0]
                    scores.setdefault("changed_read", []).append(float(got[kind] == getattr(obj, kind)))
                    kept = got["position"] == obj.position and got["background"] == scene.background
                    scores.setdefault("rest_kept", []).append(float(kept))
                if mode != "square":
                    margin = torch.ones(out.shape[-1], dtype=torch.bool)
                    margin[left : left + size] = False
                    close = ((out[0][:, :, margin] - colour(target.background).view(3, 1, 1)).abs() <= 40 / 255).all(0)
                    scores.setdefault("margin_clean", []).append(close.float().mean().item())
                reference = to_float(render_examples([Example(target, target.canonical_caption())], size))[0]
                background = colour(target.background)
                drawn, wanted = log_aspect(square[0], background), log_aspect(reference, background)
                if drawn is not None and wanted is not None:
                    scores.setdefault("aspect_error", []).append(abs(drawn - wanted))
            row = {"method": method, "mode": mode, "aspect": args.aspect, "place": args.place, "scenes": len(scenes)}
            row.update({name: round(sum(v) / len(v), 4) for name, v in scores.items()})
            row["seconds_per_edit"] = round(seconds / len(scenes), 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
