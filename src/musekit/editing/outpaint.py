"""Outpainting without distortion: the enlarged canvas is drawn at one scale in windows of the model's size.

Squashing an enlarged canvas into the model's square (what a single inpainting call would do) shows the model a
distorted scene and stretches what it draws back out: a 128 px model asked to extend a 128 px image by 128 px to
the right would see everything at half width and draw the new half twice as wide, blurred. Two modes keep the
aspect ratio (measured in docs/BENCHMARKS.md, "Outpainting: window, fit and squash"):

* ``"window"`` (default): the original keeps the model's scale (its longer side becomes the model's size), and
  windows of the model's size, placed outward from the original, each keeping a quarter window of what is already
  drawn, are inpainted one after another, nearest the original first; each window's new pixels join the canvas
  that the next window sees.
  The new area gets the detail the image has at the model's size, but each window sees only its part of the scene
  and the prompt guides each, so an object the prompt names may be drawn in several windows.
* ``"fit"``: the whole canvas is scaled so its longer side is the model's size and drawn in one window: the model
  sees the whole scene, as one Muse pass does, at a lower resolution when the canvas is larger than the model.

Either way each window's new pixels are blended in with a feathered seam and the original pixels are returned
unchanged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from musekit.editing.inpaint import inpaint_tokens, package
from musekit.editing.masks import composite, feathered_alpha, image_to_tensor, resize
from musekit.sampling.options import SamplingOptions

if TYPE_CHECKING:
    from musekit.pipeline import ImageOutput, MusePipeline

logger = logging.getLogger(__name__)

OUTPAINT_MODES = ("window", "fit")


def window_starts(length: int, window: int, known: tuple[int, int]) -> list[int]:
    """Offsets of windows of ``window`` px along an axis of ``length`` px where [lo, hi) = ``known`` is known: one
    window over the known span, then windows outward from each of its ends, each keeping a quarter window of what
    is already there, the last one flush with the edge. With only a quarter window of context the first new window
    is centred in the new area, where a model tends to draw what the prompt names (with half a window it sat on the
    seam, and the original cut such objects in half: measured in docs/BENCHMARKS.md)."""
    if length <= window:
        return [0]
    lo, hi = known
    step, context = window - window // 4, window // 4
    starts = {min(lo, length - window)}
    if hi < length:
        start = hi - context
        while start < length - window:
            starts.add(start)
            start += step
        starts.add(length - window)
    if lo > 0:
        start = lo + context - window
        while start > 0:
            starts.add(start)
            start -= step
        starts.add(0)
    return sorted(starts)


def plan_windows(height: int, width: int, box: tuple[int, int, int, int], window: int) -> list[tuple[int, int]]:
    """(top, left) of the windows over a (``height``, ``width``) canvas, both at least ``window``, that contain
    pixels outside ``box`` = (y0, x0, y1, x1), the area already known, nearest the box's centre first."""
    y0, x0, y1, x1 = box
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    rows, cols = window_starts(height, window, (y0, y1)), window_starts(width, window, (x0, x1))
    windows = [(y, x) for y in rows for x in cols]
    windows.sort(key=lambda w: (w[0] + window / 2 - cy) ** 2 + (w[1] + window / 2 - cx) ** 2)
    return [(y, x) for y, x in windows if not (y0 <= y and y + window <= y1 and x0 <= x and x + window <= x1)]


@dataclass(frozen=True)
class Layout:
    """Where the canvas lies at the working scale: its scaled size, its offset in the working area (scratch extends
    a side shorter than one window to one window), the original's box there, and the windows to draw."""

    scaled: tuple[int, int]  # (height, width) of the canvas at the working scale
    offset: tuple[int, int]  # (y, x) of the canvas in the working area
    area: tuple[int, int]  # (height, width) of the working area
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) of the original, known, in the working area
    windows: list[tuple[int, int]]


def plan_layout(size: int, full: tuple[int, int], image_box: tuple[int, int, int, int], scale: float,
                max_windows: int) -> Layout:  # fmt: skip
    """The working layout of a ``full`` (height, width) canvas whose original sits at ``image_box`` (top, left,
    height, width), scaled by ``scale``, for windows of ``size``: arithmetic only, so that a request needing more
    than ``max_windows`` windows is refused (ValueError) before any pixel or window list is built. The original's
    box is rounded inward and, on each side that was padded, kept at least one pixel from the canvas edge, so that
    even a pad under one working pixel is drawn."""
    (full_h, full_w), (top, left, height, width) = full, image_box
    work_h, work_w = max(1, round(full_h * scale)), max(1, round(full_w * scale))
    area = (max(size, work_h), max(size, work_w))

    def refuse(count: int, bound: str = "") -> ValueError:
        return ValueError(f"extending the {width}x{height} image to {full_w}x{full_h} needs {bound}{count} "
                          f"windows of the model's size (at most {max_windows}): extend by less, or in several "
                          "calls")  # fmt: skip

    off_y, off_x = (area[0] - work_h) // 2, (area[1] - work_w) // 2
    y0, x0 = math.ceil(top * scale), math.ceil(left * scale)
    y1, x1 = math.floor((top + height) * scale), math.floor((left + width) * scale)
    y0, x0 = max(y0, 1) if top else y0, max(x0, 1) if left else x0
    y1 = min(y1, work_h - 1) if top + height < full_h else y1
    x1 = min(x1, work_w - 1) if left + width < full_w else x1
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"the {width}x{height} image is too small at the model's scale to extend to "
                         f"{full_w}x{full_h}")  # fmt: skip
    box = (off_y + y0, off_x + x0, off_y + y1, off_x + x1)
    # counted per axis first (at most one window lies wholly inside the original, which is at most the model's
    # size at the working scale), so that a huge request is refused before the window list is built
    count = len(window_starts(area[0], size, (box[0], box[2]))) * len(window_starts(area[1], size, (box[1], box[3])))
    if count - 1 > max_windows:
        raise refuse(count - 1, "at least ")
    windows = plan_windows(*area, box, size)
    if len(windows) > max_windows:
        raise refuse(len(windows))
    return Layout((work_h, work_w), (off_y, off_x), area, box, windows)


def outpaint(
    pipe: MusePipeline,
    image: Image.Image | torch.Tensor,
    prompt: str | list[str],
    pad: tuple[int, int, int, int],
    fill: float | None = None,
    negative_prompt=None,
    generator: torch.Generator | None = None,
    return_dict: bool = True,
    feather_radius: int = 2,
    mode: str = "window",
    max_windows: int = 64,
    **sampling,
) -> ImageOutput | tuple:
    """See ``MusePipeline.outpaint``."""
    if len(pad) != 4 or any((not isinstance(p, int)) or p < 0 for p in pad):
        raise ValueError(f"pad must be four non-negative integers (left, top, right, bottom), got {pad}")
    if sum(pad) == 0:
        raise ValueError("pad is all zero: give at least one side to extend")
    if mode not in OUTPAINT_MODES:
        raise ValueError(f"mode must be one of {', '.join(OUTPAINT_MODES)}, got {mode!r}")
    if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(f"max_windows must be a positive integer, got {max_windows!r}")
    prompts = pipe.check_prompts(prompt)
    options = SamplingOptions.resolve(pipe.config, **sampling)
    original = image_to_tensor(image).to(pipe.device)
    left, top, right, bottom = pad
    height, width = original.shape[-2:]
    full_h, full_w = height + top + bottom, width + left + right
    # "window": the original's longer side at the model's size; "fit": the whole canvas's (one window)
    scale = pipe.image_size / (max(height, width) if mode == "window" else max(full_h, full_w))
    layout = plan_layout(pipe.image_size, (full_h, full_w), (top, left, height, width), scale, max_windows)
    # The new area starts as the image's edge continued outward (or a grey level): the tokenizer reads a little
    # across the seam, and the feathered seam blends with it.
    if fill is None:
        canvas = F.pad(original, (left, right, top, bottom), mode="replicate")
    else:
        canvas = torch.full((1, 3, full_h, full_w), float(fill), device=original.device)
        canvas[..., top : top + height, left : left + width] = original
    new_area = torch.ones(1, 1, full_h, full_w, dtype=torch.bool, device=original.device)
    new_area[..., top : top + height, left : left + width] = False

    repeat = len(prompts) * options.num_images_per_prompt
    text = pipe.encode_prompt(prompts, negative_prompt, options.num_images_per_prompt, options.guidance_scale)
    canvas = canvas.expand(repeat, -1, -1, -1)
    drawn, ids, base_ids = draw_new_area(pipe, canvas, layout, text, options, generator, feather_radius)
    logger.info("outpainted %dx%d -> %dx%d (%s)", width, height, full_w, full_h, mode)
    images = None
    if options.output_type != "ids":
        # the seam was feathered as the windows were drawn: here the original pixels are put back exactly
        images = composite(canvas, drawn, new_area.float().expand(repeat, -1, -1, -1))
    return package(images, ids, base_ids, options, return_dict)


def draw_new_area(
    pipe: MusePipeline,
    canvas: torch.Tensor,
    layout: Layout,
    text,
    options: SamplingOptions,
    generator: torch.Generator | None,
    feather_radius: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the new area of ``canvas`` (B, 3, H, W) by ``layout``, window by window. Each window's new pixels are
    blended in with a feathered edge only where they meet the original; where they meet an earlier window's
    drawing (which the window saw and continued) the seam is hard, so no pixel keeps the initial fill. Returns (the
    drawn canvas at (H, W), the last window's final-stage and base ids)."""
    size = pipe.image_size
    full_h, full_w = canvas.shape[-2:]
    (work_h, work_w), (off_y, off_x), (area_h, area_w) = layout.scaled, layout.offset, layout.area
    scaled = resize(canvas, (work_h, work_w))
    spare = (off_x, area_w - work_w - off_x, off_y, area_h - work_h - off_y)
    work = F.pad(scaled, spare, mode="replicate").clone()
    y0, x0, y1, x1 = layout.box
    original = torch.zeros(area_h, area_w, dtype=torch.bool, device=work.device)
    original[y0:y1, x0:x1] = True
    known = original.clone()
    ids = base_ids = None
    batch = canvas.shape[0]
    bar = tqdm(layout.windows, desc="outpaint", disable=not pipe.progress_bar or len(layout.windows) < 2, leave=False)
    for y, x in bar:
        todo = ~known[y : y + size, x : x + size]
        if not bool(todo.any()):  # drawn by the windows before it
            continue
        mask = todo[None, None].expand(batch, -1, -1, -1)
        window = work[..., y : y + size, x : x + size]
        ids, base_ids = inpaint_tokens(pipe, window, mask, text, options, generator)
        alpha = feathered_alpha(~original[y : y + size, x : x + size][None, None], feather_radius) * todo
        work[..., y : y + size, x : x + size] = composite(window, pipe.decode(ids, "pt"), alpha)
        known[y : y + size, x : x + size] = True
    drawn = work[..., off_y : off_y + work_h, off_x : off_x + work_w]
    return resize(drawn, (full_h, full_w)), ids, base_ids
