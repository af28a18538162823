"""Image-to-image: re-mask a share of the image's tokens given by ``strength`` and decode them under a prompt."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from PIL import Image
from tqdm.auto import tqdm

from musekit.editing.inpaint import encode_stages, finish, package
from musekit.editing.masks import composite, feathered_alpha, fit_to_model, image_to_tensor, resize, scale_region
from musekit.sampling.options import SamplingOptions
from musekit.sampling.schedules import mask_ratio

if TYPE_CHECKING:
    from musekit.pipeline import ImageOutput, MusePipeline

logger = logging.getLogger(__name__)


def random_mask(shape: tuple[int, ...], count: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(B, h, w) bool with exactly ``count`` True per sample at random positions."""
    batch = shape[0]
    length = math.prod(shape[1:])
    scores = torch.rand(batch, length, generator=generator).to(device)
    ranks = scores.argsort(1).argsort(1)
    return (ranks < count).view(shape)


@torch.no_grad()
def upsampled_start_ids(
    pipe: MusePipeline, base_ids: torch.Tensor, strength: float, generator: torch.Generator | None
) -> torch.Tensor | None:
    """``MusePipeline.sr_start_ids``: None (all [MASK], Muse) at strength 1; otherwise the base image decoded,
    upsampled to the final size and re-tokenized, with a random share ``strength`` of its tokens re-masked."""
    if strength >= 1.0:
        return None

    ids = pipe.sr_tokenizer.encode(resize(pipe.vqgan.decode(base_ids), pipe.image_size))
    mask = random_mask(tuple(ids.shape), round(ids[0].numel() * strength), generator, ids.device)
    return ids.masked_fill(mask, pipe.superres.config.mask_token_id)


def changed_region(changed: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, h, w) bool base tokens that changed -> (B, grid, grid) bool: those tokens and their 8 neighbours, at the
    super-resolution stage's grid."""
    return scale_region(changed, (grid, grid), grow=1)


IMG2IMG_MODES = ("window", "squash")


def img2img(
    pipe: MusePipeline,
    image: Image.Image | torch.Tensor,
    prompt: str | list[str],
    strength: float = 0.5,
    negative_prompt=None,
    generator: torch.Generator | None = None,
    return_dict: bool = True,
    mode: str = "window",
    feather_radius: int = 2,
    **sampling,
) -> ImageOutput | tuple:
    """See ``MusePipeline.img2img``."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if mode not in IMG2IMG_MODES:
        raise ValueError(f"mode must be one of {', '.join(IMG2IMG_MODES)}, got {mode!r}")
    prompts = pipe.check_prompts(prompt)
    options = SamplingOptions.resolve(pipe.config, **sampling)
    repeat = len(prompts) * options.num_images_per_prompt
    original = image_to_tensor(image).to(pipe.device)
    text = pipe.encode_prompt(prompts, negative_prompt, options.num_images_per_prompt, options.guidance_scale)
    height, width = original.shape[-2:]
    if height != width and mode == "window" and strength > 0.0:
        return img2img_windows(pipe, original, text, strength, options, generator, repeat, feather_radius,
                               return_dict)  # fmt: skip
    model_image = fit_to_model(original, pipe.image_size).expand(repeat, -1, -1, -1)
    final, base_out = redraw(pipe, model_image, text, strength, options, generator)
    if strength == 0.0 and options.output_type != "ids":
        # Nothing was re-masked: return the input itself, not a lossy VQ reconstruction.
        return finish(pipe, final, base_out, original.expand(repeat, -1, -1, -1),
                      torch.zeros_like(original[:, :1]).expand(repeat, -1, -1, -1), options, return_dict)  # fmt: skip
    # decoded at the model's size, then resized to the input's, as the other edits return it
    return finish(pipe, final, base_out, original.expand(repeat, -1, -1, -1), None, options, return_dict)


@torch.no_grad()
def redraw(pipe: MusePipeline, images: torch.Tensor, text, strength: float, options: SamplingOptions,
           generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Image-to-image on (B, 3, S, S) images at the model's size (``text``: ``pipe.encode_prompt`` for the B):
    returns (final-stage ids, base ids)."""
    base_ids, high_ids = encode_stages(pipe, images)
    # strength s masks gamma(1 - s) of the tokens: s = 1 masks all (full regeneration), s = 0 masks none.
    ratio = float(mask_ratio(1.0 - strength, pipe.scheduler_config.mask_schedule, pipe.scheduler_config.schedule_power))
    base_cfg = pipe.transformer.config
    count = round(base_cfg.seq_len * ratio)
    batch = images.shape[0]
    base_out = base_ids
    if count > 0:
        start = base_ids.masked_fill(random_mask(tuple(base_ids.shape), count, generator, base_ids.device),
                                     base_cfg.mask_token_id)  # fmt: skip
        # Every token may be redrawn, the kept ones too: a kept token that the prompt or its new neighbours
        # contradict is masked again instead of staying as a stray patch of the old image. The strength sets how
        # many tokens start masked (U0, and so how many the schedule's n_k open again at each step); the model's
        # full step count lets the redraw settle into one scene (docs/BENCHMARKS.md, "Image-to-image").
        # The aMUSEd scheduler reproduces diffusers' img2img instead: kept tokens fixed, round(strength x steps).
        # With every token masked (strength 1) there is nothing to revise: the base stage decodes as generation does.
        revise = pipe.scheduler_config.kind != "amused" and count < base_cfg.seq_len
        steps = None if revise else max(1, round(options.num_inference_steps * strength))
        base_out = pipe.generate_tokens(pipe.transformer, text, batch, options, generator, None, start, steps,
                                        revise=revise)  # fmt: skip
    final = base_out
    if pipe.superres is not None:
        final = high_ids
        changed = changed_region(base_out != base_ids, pipe.superres.config.grid_size)
        if bool(changed.any()):
            # As generation does, from the new base image, but only where it changed: elsewhere the image's own
            # 128 px tokens stay, so its detail survives and no old token sits inside a redrawn area.
            final = pipe.super_resolve(base_out, text, batch, options, generator, keep_ids=high_ids, region=changed)
    return final, base_out


def window_plan(height: int, width: int, size: int) -> tuple[tuple[int, int], list[int]]:
    """A non-square image edited at the model's scale: the (height, width) canvas it is resized to (its shorter side
    ``size``) and the starts along the longer side of the ``size`` windows, the middle one first, then outward, each
    keeping a quarter window of what is already done (``outpaint.window_starts``)."""
    from musekit.editing.outpaint import window_starts

    scale = size / min(height, width)
    long_side = max(size, round(max(height, width) * scale))
    middle = (long_side - size) // 2
    starts = sorted(window_starts(long_side, size, (middle, middle + size)), key=lambda s: (abs(s - middle), s))
    return ((size, long_side) if width > height else (long_side, size)), starts


def window_area(canvas: tuple[int, int], start: int, size: int) -> tuple[slice, slice]:
    """The (rows, columns) of the window at ``start`` along the canvas's longer side."""
    if canvas[1] > canvas[0]:
        return slice(None), slice(start, start + size)
    return slice(start, start + size), slice(None)


def img2img_windows(pipe: MusePipeline, original: torch.Tensor, text, strength: float, options: SamplingOptions,
                    generator: torch.Generator | None, repeat: int, feather_radius: int,
                    return_dict: bool) -> ImageOutput | tuple:  # fmt: skip
    """Image-to-image of a non-square (1, 3, H, W) image at the model's own scale: its shorter side becomes the
    model's size and square windows of that size are redrawn one after another, the middle one first, then outward,
    each keeping a quarter window of what is already redrawn (``outpaint.window_starts``). Each window sees the
    pixels redrawn before it and keeps only its new part (feathered where it meets them); the ids returned are the
    last window's. Squashing the image into the model's square instead showed the model every object narrowed, and
    what it drew came back stretched (docs/BENCHMARKS.md, "Image-to-image of non-square images: windows at the
    model's scale")."""
    size = pipe.image_size
    height, width = original.shape[-2:]
    canvas, starts = window_plan(height, width, size)
    work = resize(original, canvas).expand(repeat, -1, -1, -1).clone()
    done = torch.zeros(canvas, dtype=torch.bool, device=work.device)
    logger.info("the %dx%d image is redrawn in %d windows of %d px at the model's scale", width, height,
                len(starts), size)  # fmt: skip
    final = base_out = None
    for start in tqdm(starts, desc="img2img", disable=not pipe.progress_bar, leave=False):
        area = window_area(canvas, start, size)
        todo = ~done[area]
        window = work[(..., *area)]
        final, base_out = redraw(pipe, window, text, strength, options, generator)
        alpha = feathered_alpha(todo[None, None], feather_radius) * todo  # decoded even for ids: the next sees it
        work[(..., *area)] = composite(window, pipe.decode(final, "pt"), alpha.expand(repeat, -1, -1, -1))
        done[area] = True
    images = None if options.output_type == "ids" else resize(work, (height, width))
    return package(images, final, base_out, options, return_dict)
