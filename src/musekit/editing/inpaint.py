"""Text-guided inpainting at two scales (Muse 3.3.1), composited into the original pixels."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image

from musekit.editing.masks import (
    composite,
    feathered_alpha,
    fit_to_model,
    image_to_tensor,
    mask_to_tensor,
    resize,
    resize_mask,
)
from musekit.editing.masks import token_mask as to_token_mask
from musekit.sampling.options import SamplingOptions

if TYPE_CHECKING:
    from musekit.pipeline import ImageOutput, MusePipeline
    from musekit.text import TextEmbeddings

logger = logging.getLogger(__name__)


def encode_stages(pipe: MusePipeline, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, 3, S, S) at the model's size -> (base ids, super-resolution ids or None). The base ids use only the codes
    the base transformer predicts when it predicts a subset of the codebook."""
    allowed = getattr(pipe.transformer.config, "allowed_codes", ())
    allowed = torch.tensor(allowed, dtype=torch.long, device=image.device) if allowed else None
    base = pipe.vqgan.encode(resize(image, pipe.base_image_size), allowed)
    high = pipe.sr_tokenizer.encode(image) if pipe.superres is not None else None
    return base, high


@torch.no_grad()
def inpaint_tokens(
    pipe: MusePipeline,
    image: torch.Tensor,
    pixel_mask: torch.Tensor,
    text: TextEmbeddings,
    options: SamplingOptions,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repaint the tokens under ``pixel_mask`` (B, 1, S, S) of ``image`` (B, 3, S, S), base first, then SR (which
    starts the region from the upsampled new base image when ``sr_strength`` < 1, as generation does). ``text`` is
    ``pipe.encode_prompt``'s output for the B images.

    Returns (final-stage ids, base ids). Tokens outside the mask never change.
    """
    batch = image.shape[0]
    base_ids, high_ids = encode_stages(pipe, image)
    base_cfg = pipe.transformer.config
    base_mask = to_token_mask(pixel_mask, base_cfg.grid_size)
    start = base_ids.masked_fill(base_mask, base_cfg.mask_token_id)
    base_out = pipe.generate_tokens(pipe.transformer, text, batch, options, generator, start_ids=start)
    if pipe.superres is None:
        return base_out, base_out
    region = to_token_mask(pixel_mask, pipe.superres.config.grid_size)
    return pipe.super_resolve(base_out, text, batch, options, generator, keep_ids=high_ids, region=region), base_out


def finish(pipe: MusePipeline, ids, base_ids, original, alpha, options: SamplingOptions, return_dict: bool, **extra):
    """Decode, resize to the original size, composite, and format like ``__call__``."""
    images = None
    if options.output_type != "ids":
        decoded = pipe.decode(ids, "pt")
        height, width = original.shape[-2:]
        if decoded.shape[-2:] != (height, width):
            decoded = F.interpolate(decoded, size=(height, width), mode="bilinear", antialias=True).clamp(0, 1)
        images = decoded if alpha is None else composite(original, decoded, alpha)
    return package(images, ids, base_ids, options, return_dict, **extra)


def package(images: torch.Tensor | None, ids, base_ids, options: SamplingOptions, return_dict: bool, **extra):
    """(B, 3, H, W) images in [0, 1] (None for ``output_type`` "ids") -> ``ImageOutput`` or (images, ids), the
    images in the requested ``output_type``."""
    from musekit.io.images import tensor_to_numpy, tensor_to_pil
    from musekit.pipeline import ImageOutput

    if images is not None and options.output_type == "np":
        images = tensor_to_numpy(images)
    elif images is not None and options.output_type == "pil":
        images = tensor_to_pil(images)
    if not return_dict:
        return images, ids
    return ImageOutput(images, ids, base_ids, **extra)


def square_window(pixel_mask: torch.Tensor, margin: int = 4) -> tuple[int, int, int] | None:
    """(top, left, side) of the square of the image's shorter side that holds the mask (with ``margin`` px around
    it where the image allows), centred on the mask; None when the image is square or the mask does not fit in one
    such square. Inpainting in it keeps the image's aspect ratio: a square is scaled to the model's square evenly."""
    height, width = pixel_mask.shape[-2:]
    if height == width:
        return None
    side = min(height, width)
    rows = torch.nonzero(pixel_mask.reshape(-1, height, width).any(0).any(1)).flatten()
    cols = torch.nonzero(pixel_mask.reshape(-1, height, width).any(0).any(0)).flatten()
    if len(rows) == 0:
        return None
    (first, last), length = ((cols[0], cols[-1]), width) if width > height else ((rows[0], rows[-1]), height)
    first, last = int(first), int(last)
    if last - first + 1 > side:
        return None
    lo, hi = max(0, first - margin), min(length, last + 1 + margin)
    start = min(max(0, (lo + hi - side) // 2), length - side)
    return (0, start, side) if width > height else (start, 0, side)


def inpaint(
    pipe: MusePipeline,
    image: Image.Image | torch.Tensor,
    mask: Image.Image | torch.Tensor,
    prompt: str | list[str],
    negative_prompt=None,
    generator: torch.Generator | None = None,
    return_dict: bool = True,
    feather_radius: int = 2,
    **sampling,
) -> ImageOutput | tuple:
    """See ``MusePipeline.inpaint``."""
    prompts = pipe.check_prompts(prompt)
    options = SamplingOptions.resolve(pipe.config, **sampling)
    original = image_to_tensor(image).to(pipe.device)
    height, width = original.shape[-2:]
    pixel_mask = mask_to_tensor(mask, (width, height)).to(pipe.device)
    if not bool(pixel_mask.any()):
        raise ValueError("the mask is empty: paint the region to repaint in white")
    repeat = len(prompts) * options.num_images_per_prompt
    window = square_window(pixel_mask)
    top, left, side = window if window is not None else (0, 0, 0)
    if window is not None:  # a non-square image: inpaint the square around the mask, at the image's own scale
        logger.info("the %dx%d image is inpainted in the %dx%d square around the mask (at the model's %dpx)",
                    width, height, side, side, pipe.image_size)  # fmt: skip
        crop = original[..., top : top + side, left : left + side]
        crop_mask = pixel_mask[..., top : top + side, left : left + side]
        model_image = resize(crop, pipe.image_size)
    else:
        crop, crop_mask = original, pixel_mask
        model_image = fit_to_model(original, pipe.image_size)
    model_mask = resize_mask(crop_mask, pipe.image_size)
    text = pipe.encode_prompt(prompts, negative_prompt, options.num_images_per_prompt, options.guidance_scale)
    ids, base_ids = inpaint_tokens(pipe, model_image.expand(repeat, -1, -1, -1), model_mask.expand(repeat, -1, -1, -1),
                                   text, options, generator)  # fmt: skip
    alpha = feathered_alpha(crop_mask, feather_radius).expand(repeat, -1, -1, -1)
    if window is None:
        return finish(pipe, ids, base_ids, original.expand(repeat, -1, -1, -1), alpha, options, return_dict)
    if options.output_type == "ids":
        return package(None, ids, base_ids, options, return_dict)
    decoded = pipe.decode(ids, "pt")
    if decoded.shape[-1] != side:
        decoded = F.interpolate(decoded, size=(side, side), mode="bilinear", antialias=True).clamp(0, 1)
    images = original.expand(repeat, -1, -1, -1).clone()
    images[..., top : top + side, left : left + side] = composite(crop.expand(repeat, -1, -1, -1), decoded, alpha)
    return package(images, ids, base_ids, options, return_dict)
