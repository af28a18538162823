"""Image-to-image: re-mask a share of the image's tokens given by ``strength`` and decode them under a prompt."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from PIL import Image

from musekit.editing.inpaint import encode_stages, finish
from musekit.editing.masks import fit_to_model, image_to_tensor, resize, scale_region
from musekit.sampling.options import SamplingOptions
from musekit.sampling.schedules import mask_ratio

if TYPE_CHECKING:
    from musekit.pipeline import ImageOutput, MusePipeline


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


def img2img(
    pipe: MusePipeline,
    image: Image.Image | torch.Tensor,
    prompt: str | list[str],
    strength: float = 0.5,
    negative_prompt=None,
    generator: torch.Generator | None = None,
    return_dict: bool = True,
    **sampling,
) -> ImageOutput | tuple:
    """See ``MusePipeline.img2img``."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    prompts = pipe.check_prompts(prompt)
    options = SamplingOptions.resolve(pipe.config, **sampling)
    repeat = len(prompts) * options.num_images_per_prompt
    original = image_to_tensor(image).to(pipe.device)
    model_image = fit_to_model(original, pipe.image_size).expand(repeat, -1, -1, -1)
    base_ids, high_ids = encode_stages(pipe, model_image)
    # strength s masks gamma(1 - s) of the tokens: s = 1 masks all (full regeneration), s = 0 masks none.
    ratio = float(mask_ratio(1.0 - strength, pipe.scheduler_config.mask_schedule, pipe.scheduler_config.schedule_power))
    text = pipe.encode_prompt(prompts, negative_prompt, options.num_images_per_prompt, options.guidance_scale)
    base_cfg = pipe.transformer.config
    count = round(base_cfg.seq_len * ratio)
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
        base_out = pipe.generate_tokens(pipe.transformer, text, repeat, options, generator, None, start, steps,
                                        revise=revise)  # fmt: skip
    final = base_out
    if pipe.superres is not None:
        final = high_ids
        changed = changed_region(base_out != base_ids, pipe.superres.config.grid_size)
        if bool(changed.any()):
            # As generation does, from the new base image, but only where it changed: elsewhere the image's own
            # 128 px tokens stay, so its detail survives and no old token sits inside a redrawn area.
            final = pipe.super_resolve(base_out, text, repeat, options, generator, keep_ids=high_ids, region=changed)
    if strength == 0.0 and options.output_type != "ids":
        # Nothing was re-masked: return the input itself, not a lossy VQ reconstruction.
        return finish(pipe, final, base_out, original.expand(repeat, -1, -1, -1),
                      torch.zeros_like(original[:, :1]).expand(repeat, -1, -1, -1), options, return_dict)  # fmt: skip
    # decoded at the model's size, then resized to the input's, as the other edits return it
    return finish(pipe, final, base_out, original.expand(repeat, -1, -1, -1), None, options, return_dict)
