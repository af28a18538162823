"""Image-to-image: re-mask a share of the image's tokens given by ``strength`` and decode them under a prompt."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from PIL import Image

from musekit.editing.inpaint import encode_stages, finish
from musekit.editing.masks import fit_to_model, image_to_tensor, resize
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
    stages = [(pipe.transformer, base_ids, None)]
    if pipe.superres is not None:
        stages.append((pipe.superres, high_ids, "cond"))
    outputs = []
    for model, ids, cond in stages:
        cfg = model.config
        count = round(cfg.seq_len * ratio)
        if count == 0:
            outputs.append(ids)
            continue
        start = ids.masked_fill(random_mask(tuple(ids.shape), count, generator, ids.device), cfg.mask_token_id)
        default = options.sr_inference_steps if cond else options.num_inference_steps
        steps = max(1, round(default * strength))
        cond_ids = outputs[0] if cond else None
        outputs.append(pipe.generate_tokens(model, text, repeat, options, generator, cond_ids, start, steps))
    final = outputs[-1]
    if strength == 0.0 and options.output_type != "ids":
        # Nothing was re-masked: return the input itself (at the model size), not a lossy VQ reconstruction.
        return finish(pipe, final, outputs[0], model_image, torch.zeros_like(model_image[:, :1]), options,
                      return_dict)  # fmt: skip
    return finish(pipe, final, outputs[0], model_image, None, options, return_dict)
