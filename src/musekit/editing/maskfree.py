"""Mask-free editing (Muse 3.3.2): repeatedly re-mask a random subset of tokens and resample under the new prompt.

With ``source_prompt`` the edit is confined to a region found with no mask drawn: the cross-attention maps of the
words that differ between the source and target prompts pick the tokens the edit is about; nothing else changes.
"""

from __future__ import annotations

import difflib
import logging
from typing import TYPE_CHECKING

import torch
from PIL import Image
from tqdm.auto import tqdm

from musekit.editing.img2img import random_mask, window_area, window_plan
from musekit.editing.inpaint import encode_stages, finish, package
from musekit.editing.masks import (
    composite,
    feathered_alpha,
    fit_to_model,
    image_to_tensor,
    resize,
    resize_mask,
    scale_region,
)
from musekit.models.attention_maps import cross_attention_maps, word_map
from musekit.personalize.tokens import substitute
from musekit.sampling.options import SamplingOptions
from musekit.sampling.sampler import decode_tokens
from musekit.text import TextEmbeddings

if TYPE_CHECKING:
    from musekit.pipeline import ImageOutput, MusePipeline

logger = logging.getLogger(__name__)


def differing_positions(tokenizer, source: str, target: str) -> tuple[list[int], list[int]]:
    """Token positions (in each prompt's encoding) of the words that differ between the two prompts."""
    src = tokenizer(source)["input_ids"]
    tgt = tokenizer(target)["input_ids"]
    src_pos, tgt_pos = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=src, b=tgt, autojunk=False).get_opcodes():
        if tag != "equal":
            src_pos.extend(range(i1, i2))
            tgt_pos.extend(range(j1, j2))
    return src_pos, tgt_pos


@torch.no_grad()
def edit_region(
    pipe: MusePipeline,
    base_ids: torch.Tensor,
    source_prompt: str,
    prompt: str,
    threshold: float = 0.5,
    dilation: int = 1,
) -> torch.Tensor:
    """(B, h, w) bool: base tokens the changed words attend to (normalised map >= threshold, dilated).

    In a call with Perfusion concepts, a concept's token is read as its superclass here: key-locking makes the
    concept attend where its superclass does, and the plain encoder does not know the concept's placeholders."""
    call = pipe._concept_call
    for concept in call.concepts if call is not None else []:
        source_prompt, prompt = substitute([source_prompt, prompt], concept.token, concept.superclass)
    src_pos, tgt_pos = differing_positions(pipe.text_encoder.tokenizer, source_prompt, prompt)
    if not src_pos and not tgt_pos:
        raise ValueError("source_prompt and prompt are identical: there is no changed word to locate")
    # the fp32 model of a --half pipeline (its fast copy runs without the hooks that read the maps): the region is
    # computed once per call, so its precision costs nothing per step
    model = getattr(pipe.transformer, "full", pipe.transformer)
    grid = model.config.grid_size
    batch = base_ids.shape[0]
    maps = []
    for text, positions in ((source_prompt, src_pos), (prompt, tgt_pos)):
        limit = pipe.text_encoder.config.max_length
        positions = [p for p in positions if p < limit]
        if positions:
            cache = model.precompute(pipe.text_encoder.encode([text]).expand(batch).to(pipe.device))
            maps.append(word_map(cross_attention_maps(model, base_ids, cache), positions, grid))
    combined = torch.stack(maps).amax(0)
    return scale_region(combined >= threshold, combined.shape[-2:], grow=dilation)


def stage_cache(pipe: MusePipeline, model, text: TextEmbeddings, batch: int, scale: float):
    """The base stage's text cache for the edit loop (the SR stage goes through ``pipe.super_resolve``)."""
    if scale == 1.0:
        text = text[batch:]
    return model.precompute(text.to(pipe.device))


EDIT_MODES = ("window", "squash")


def edit(
    pipe: MusePipeline,
    image: Image.Image | torch.Tensor,
    prompt: str | list[str],
    iterations: int = 100,
    remask_fraction: float = 0.08,
    guidance_scale: float | None = None,
    top_k: int | None = 3,
    return_intermediates: bool = False,
    source_prompt: str | None = None,
    negative_prompt=None,
    generator: torch.Generator | None = None,
    return_dict: bool = True,
    intermediate_every: int | None = None,
    region_threshold: float = 0.5,
    region_dilation: int = 1,
    mode: str = "window",
    feather_radius: int = 2,
    **sampling,
) -> ImageOutput | tuple:
    """See ``MusePipeline.edit``."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0.0 < remask_fraction <= 1.0:
        raise ValueError(f"remask_fraction must be in (0, 1], got {remask_fraction}")
    if mode not in EDIT_MODES:
        raise ValueError(f"mode must be one of {', '.join(EDIT_MODES)}, got {mode!r}")
    prompts = pipe.check_prompts(prompt)
    if source_prompt is not None and len(prompts) != 1:
        raise ValueError("source_prompt editing takes a single prompt")
    options = SamplingOptions.resolve(pipe.config, guidance_scale=guidance_scale, top_k=top_k, **sampling)
    repeat = len(prompts) * options.num_images_per_prompt
    original = image_to_tensor(image).to(pipe.device)
    text = pipe.encode_prompt(prompts, negative_prompt, options.num_images_per_prompt, options.guidance_scale)
    every = intermediate_every or max(1, iterations // 4)
    loop = (text, repeat, options, iterations, remask_fraction, generator, every if return_intermediates else None)
    height, width = original.shape[-2:]
    region = None
    if height != width and mode == "window":
        if source_prompt is not None:  # found on the whole image, squeezed into the model's square
            squeezed = resize(original, pipe.image_size).expand(repeat, -1, -1, -1)
            region = edit_region(pipe, encode_stages(pipe, squeezed)[0], source_prompt, prompts[0], region_threshold,
                                 region_dilation)  # fmt: skip
        return edit_windows(pipe, original, region, loop, feather_radius, return_dict)
    model_image = fit_to_model(original, pipe.image_size).expand(repeat, -1, -1, -1)
    base_ids, high_ids = encode_stages(pipe, model_image)
    if source_prompt is not None:
        region = edit_region(pipe, base_ids, source_prompt, prompts[0], region_threshold, region_dilation)
    finals, bases = edit_loop(pipe, base_ids, high_ids, region, *loop)
    alpha = None
    if region is not None:
        alpha = feathered_alpha(scale_region(region, original.shape[-2:]).unsqueeze(1), feather_radius)
    original = original.expand(repeat, -1, -1, -1)
    intermediates = None
    if return_intermediates:
        intermediates = [finish(pipe, f, b, original, alpha, options, True).images for f, b in zip(finals, bases)]
    return finish(pipe, finals[-1], bases[-1], original, alpha, options, return_dict, intermediates=intermediates)


@torch.no_grad()
def edit_loop(pipe: MusePipeline, base_ids: torch.Tensor, high_ids: torch.Tensor | None, region: torch.Tensor | None,
              text: TextEmbeddings, repeat: int, options: SamplingOptions, iterations: int, remask_fraction: float,
              generator: torch.Generator | None,
              snapshot_every: int | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
    """The edit of one image at the model's size: ``iterations`` times a random ``remask_fraction`` of the base
    tokens (only the ``region``'s, when given) re-masked and decoded under the prompt, then the SR stage. Returns the
    final-stage ids and the base ids, one pair per snapshot (every ``snapshot_every`` iterations and the last) or
    just the last."""
    model = pipe.transformer
    cfg = model.config
    cache = stage_cache(pipe, model, text, repeat, options.guidance_scale)
    per_iteration = max(1, round(remask_fraction * cfg.seq_len))
    ids, snapshots = base_ids.clone(), []
    for step in tqdm(range(iterations), desc="edit", disable=not pipe.progress_bar, leave=False):
        chosen = random_mask(tuple(ids.shape), per_iteration, generator, ids.device)
        if region is not None:  # confine the random subset to the region (all of it when it is small)
            scores = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~region, 2.0)
            ranks = scores.flatten(1).argsort(1).argsort(1).view(ids.shape)
            chosen = region & (ranks < per_iteration)
        start = ids.masked_fill(chosen, cfg.mask_token_id)
        ids = decode_tokens(model, cache, start, 1, pipe.scheduler_config, options.guidance_scale,
                            top_k=options.top_k, generator=generator)  # fmt: skip
        if snapshot_every is not None and ((step + 1) % snapshot_every == 0 or step + 1 == iterations):
            snapshots.append(ids.clone())  # the last is the result
    bases = snapshots if snapshot_every is not None else [ids]
    finals = [super_resolve(pipe, base, high_ids, region, text, repeat, options, generator) for base in bases]
    return finals, bases


def edit_windows(pipe: MusePipeline, original: torch.Tensor, region: torch.Tensor | None, loop: tuple,
                 feather_radius: int, return_dict: bool) -> ImageOutput | tuple:  # fmt: skip
    """The edit of a non-square (1, 3, H, W) image at the model's own scale, as ``img2img_windows`` redraws one: its
    shorter side becomes the model's size and model-size windows are edited one after another from the middle
    outward, each seeing what the ones before changed and keeping only its new part. With ``source_prompt`` the
    ``region`` is found once on the whole image squeezed into the model's square, where every word's object is in
    view, and each window edits only its share of it; a window with none is left as it is. The ids returned are
    the last edited window's."""
    text, repeat, options, iterations, remask_fraction, generator, snapshot_every = loop
    size = pipe.image_size
    height, width = original.shape[-2:]
    canvas, starts = window_plan(height, width, size)
    work = resize(original, canvas).expand(repeat, -1, -1, -1).clone()
    wanted = None if region is None else scale_region(region, canvas)  # (B, *canvas) bool pixels
    done = torch.zeros(canvas, dtype=torch.bool, device=work.device)
    grid = pipe.transformer.config.grid_size
    logger.info("the %dx%d image is edited in up to %d windows of %d px at the model's scale", width, height,
                len(starts), size)  # fmt: skip
    canvases, final, base = None, None, None
    for start in tqdm(starts, desc="edit windows", disable=not pipe.progress_bar, leave=False):
        area = window_area(canvas, start, size)
        todo = ~done[area]
        done[area] = True
        window = work[(..., *area)]
        new = todo[None].expand(repeat, -1, -1)
        window_region = None
        if wanted is not None:
            new = new & wanted[(..., *area)]
            if not bool(new.any()):
                continue
            window_region = resize_mask(new[:, None].float(), grid)[:, 0]  # any pixel of a token: the token
        base_ids, high_ids = encode_stages(pipe, window)
        finals, bases = edit_loop(pipe, base_ids, high_ids, window_region, text, repeat, options, iterations,
                                  remask_fraction, generator, snapshot_every)  # fmt: skip
        alpha = (feathered_alpha(new[:, None].float(), feather_radius) * todo).expand(-1, 3, -1, -1)
        decoded = [pipe.decode(final_k, "pt") for final_k in finals]  # one per snapshot; the last is the result
        if snapshot_every is not None:
            canvases = canvases or [work.clone() for _ in finals]
            for canvas_k, drawn in zip(canvases, decoded):
                canvas_k[(..., *area)] = composite(canvas_k[(..., *area)], drawn, alpha)
        work[(..., *area)] = composite(window, decoded[-1], alpha)
        final, base = finals[-1], bases[-1]
    if final is None:  # no window held any of the region: nothing was edited
        base, final = encode_stages(pipe, fit_to_model(original, size).expand(repeat, -1, -1, -1))
        final = base if final is None else final
    intermediates = None
    if canvases is not None:
        intermediates = [package(resize(c, (height, width)), None, None, options, True).images for c in canvases]
    images = None if options.output_type == "ids" else resize(work, (height, width))
    return package(images, final, base, options, return_dict, intermediates=intermediates)


def super_resolve(pipe, base_ids, high_ids, region, text, batch, options, generator) -> torch.Tensor:
    """SR under the edit prompt: everything (random variant) or only the region's tokens (region variant)."""
    if pipe.superres is None:
        return base_ids
    if region is None:
        return pipe.super_resolve(base_ids, text, batch, options, generator)
    grid = pipe.superres.config.grid_size
    high_region = scale_region(region, (grid, grid))
    return pipe.super_resolve(base_ids, text, batch, options, generator, keep_ids=high_ids, region=high_region)
