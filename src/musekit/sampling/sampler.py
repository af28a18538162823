"""The decoding loop: drive a masked transformer with the scheduler and guidance from a start token grid."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from musekit.config import SchedulerConfig
from musekit.models.layers import ContextCache
from musekit.models.transformer import MaskedTransformer
from musekit.sampling.guidance import apply_guidance, guidance_scale_at
from musekit.sampling.scheduler import MaskGITScheduler


def build_scheduler(mask_token_id: int, config: SchedulerConfig | None):
    """A fresh scheduler for one call (it keeps per-call state, so pipelines never share one)."""
    if config is not None and config.kind == "amused":
        from musekit.sampling.amused_scheduler import AmusedScheduler

        return AmusedScheduler(mask_token_id, config.mask_schedule, config.draws)
    return MaskGITScheduler(mask_token_id, config)


def masked_positions(ids: torch.Tensor, mask_token_id: int) -> torch.Tensor | None:
    """(B, L) ids -> (B, M) indices covering every [MASK] (M = the most masks in a row), or None when every
    token of some row is masked (then the full logits are needed anyway). Rows with fewer masks are padded with
    decided positions, whose logits the scheduler ignores."""
    unknown = ids == mask_token_id
    count = int(unknown.sum(1).max())
    if count == ids.shape[1]:
        return None
    order = torch.argsort((~unknown).to(torch.uint8), dim=1, stable=True)  # masked positions first
    return order[:, :count]


def scatter_logits(part: torch.Tensor, positions: torch.Tensor | None, length: int) -> torch.Tensor:
    """(B, M, V) logits at ``positions`` -> (B, L, V), zeros elsewhere (the decided tokens)."""
    if positions is None:
        return part
    full = part.new_zeros(part.shape[0], length, part.shape[-1])
    return full.scatter_(1, positions.unsqueeze(-1).expand_as(part), part)


@torch.no_grad()
def decode_tokens(
    model: MaskedTransformer,
    cache: ContextCache,
    ids: torch.Tensor,
    num_inference_steps: int,
    scheduler_config: SchedulerConfig | None = None,
    guidance_scale: float = 1.0,
    guidance_schedule: str = "constant",
    temperature: float | tuple[float, float] | None = None,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    description: str = "decoding",
    revise: bool = False,
) -> torch.Tensor:
    """Fill every [MASK] in ``ids`` by parallel decoding.

    Args:
        model: the base or super-resolution transformer.
        cache: precomputed context for batch B (no guidance) or 2B ([unconditional/negative ; conditional]).
        ids: (B, L) or (B, h, w) int64 start tokens; known tokens are kept as they are.
        num_inference_steps: decoding steps K.
        guidance_scale: s of u + s (c - u); ignored when the cache holds only the conditional batch.
        revise: known tokens may be masked again and redrawn (image-to-image; ``MaskGITScheduler`` only: the aMUSEd
            scheduler keeps diffusers' behaviour, known tokens fixed).

    Returns:
        ids shaped like the input with no [MASK] left.
    """
    batch = ids.shape[0]
    guided = cache.batch_size == 2 * batch
    if not guided and cache.batch_size != batch:
        raise ValueError(f"context batch {cache.batch_size} does not match {batch} images (or 2x for guidance)")
    scheduler = build_scheduler(model.config.mask_token_id, scheduler_config)
    scheduler.set_timesteps(num_inference_steps, temperature)
    revise = revise and isinstance(scheduler, MaskGITScheduler)
    revising = {"revise": True} if revise else {}  # the aMUSEd scheduler takes no such argument
    steps = list(enumerate(scheduler.timesteps.tolist()))
    length = ids[0].numel()
    for index, timestep in tqdm(steps, desc=description, disable=not progress, leave=False):
        flat = ids.reshape(batch, length)
        # logits only where tokens are unknown (everywhere when known tokens may be revised)
        positions = None if revise else masked_positions(flat, model.config.mask_token_id)
        if guided:
            both = None if positions is None else torch.cat([positions, positions])
            logits = model(torch.cat([ids, ids]), cache=cache, positions=both)
            uncond, cond = logits.chunk(2)
            scale = guidance_scale_at(index, num_inference_steps, guidance_scale, guidance_schedule)
            logits = apply_guidance(uncond, cond, scale)
        else:
            logits = model(ids, cache=cache, positions=positions)
        logits = scatter_logits(logits, positions, length)
        ids = scheduler.step(logits, timestep, ids, generator=generator, top_k=top_k, **revising).prev_ids
    return ids
