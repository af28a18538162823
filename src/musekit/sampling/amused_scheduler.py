"""A scheduler that reproduces diffusers' ``AmusedScheduler`` token for token (same generator consumption).

Differences from ``MaskGITScheduler`` (reference/muse.md 4.5): token values are drawn with ``torch.multinomial``;
the count left masked is floor(L * gamma((k+1)/K)) of *all* L tokens times ``starting_mask_ratio`` (diffusers'
inpainting passes the masked share); the cut-off is the (mask_len+1)-th smallest confidence; the temperature is
linspace(t0, t1, K), or linspace(t, 0.01, K) for a scalar.

``draws="inverse-cdf"`` draws the same distribution (to float32 resolution) another way: one uniform per masked
position, located in the cumulative sum of its probabilities. ``torch.multinomial`` (diffusers' draw, kept by the
default ``"multinomial"``) samples every position, decided ones included, through one exponential per category: on
a 2-core CPU 32-37 ms per step for 256 x 8,192 probabilities against 1-9 ms (docs/BENCHMARKS.md). The ids follow
another random stream, so only paths that cannot give diffusers' ids anyway (the reduced-precision ones) gain by it.
"""

from __future__ import annotations

import math

import torch

from musekit.config import SCHEDULER_DRAWS
from musekit.sampling.scheduler import SchedulerOutput
from musekit.sampling.schedules import uniform


def _gumbel(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    noise = torch.zeros_like(like, device=device).uniform_(0, 1, generator=generator).to(like.device)
    return -torch.log((-torch.log(noise.clamp(1e-20))).clamp(1e-20))


class AmusedScheduler:
    def __init__(self, mask_token_id: int, masking_schedule: str = "cosine", draws: str = "multinomial") -> None:
        if masking_schedule not in ("cosine", "linear"):
            raise ValueError(f"masking_schedule must be cosine or linear, got {masking_schedule!r}")
        if draws not in SCHEDULER_DRAWS:
            raise ValueError(f"draws must be one of {SCHEDULER_DRAWS}, got {draws!r}")
        self.mask_token_id = mask_token_id
        self.masking_schedule = masking_schedule
        self.draws = draws
        self.timesteps: torch.Tensor | None = None
        self.temperatures: torch.Tensor | None = None
        self.starting_mask_ratio = 1.0

    def set_timesteps(self, num_inference_steps: int, temperature=(2, 0)) -> None:
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.timesteps = torch.arange(num_inference_steps).flip(0)
        if temperature is None:
            temperature = (2, 0)
        if isinstance(temperature, tuple | list):
            self.temperatures = torch.linspace(temperature[0], temperature[1], num_inference_steps)
        else:
            self.temperatures = torch.linspace(temperature, 0.01, num_inference_steps)

    def _draw(self, logits, sample, unknown, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids with every unknown position drawn, and (B, L) the probability of each draw (1 elsewhere)."""
        if self.draws == "inverse-cdf":
            drawn, chosen = inverse_cdf_draws(logits.reshape(*sample.shape, -1)[unknown].float(), generator)
            selected = torch.ones(sample.shape, dtype=chosen.dtype, device=sample.device)
            return sample.masked_scatter(unknown, drawn), selected.masked_scatter(unknown, chosen)
        probs = logits.softmax(dim=-1)
        flat = (probs.to(generator.device) if generator is not None else probs).float().reshape(-1, probs.shape[-1])
        pred = torch.multinomial(flat, 1, generator=generator).to(probs.device)[:, 0].view(*probs.shape[:-1])
        pred = torch.where(unknown, pred, sample)
        return pred, torch.gather(probs, -1, pred[:, :, None])[:, :, 0]

    def step(self, logits: torch.Tensor, timestep, ids: torch.Tensor, generator=None, top_k=None) -> SchedulerOutput:
        """logits (B, L, C), ids (B, L) or (B, h, w); ``top_k`` is not part of aMUSEd and must be None."""
        if top_k is not None:
            raise ValueError("the aMUSEd scheduler samples from the full distribution (top_k must be None)")
        shape = ids.shape
        sample = ids.reshape(ids.shape[0], -1)
        unknown = sample == self.mask_token_id
        pred, selected = self._draw(logits, sample, unknown, generator)
        if int(timestep) == 0:
            return SchedulerOutput(pred.view(shape), pred.view(shape))
        step_idx = (self.timesteps == timestep).nonzero().to(sample.device)
        ratio = (step_idx + 1) / len(self.timesteps)
        gamma = torch.cos(ratio * math.pi / 2) if self.masking_schedule == "cosine" else 1 - ratio
        mask_len = (sample.shape[1] * (self.starting_mask_ratio * gamma)).floor()
        mask_len = torch.min(unknown.sum(dim=-1, keepdim=True) - 1, mask_len)
        mask_len = torch.max(torch.tensor([1], device=sample.device), mask_len)
        selected = torch.where(unknown, selected, torch.finfo(selected.dtype).max)
        temperature = self.temperatures.to(sample.device)[step_idx]
        confidence = torch.log(selected.clamp(1e-20)) + temperature * _gumbel(selected, generator)
        cut_off = torch.gather(torch.sort(confidence, dim=-1).values, 1, mask_len.long())
        prev = torch.where(confidence < cut_off, self.mask_token_id, pred)
        return SchedulerOutput(prev.view(shape), pred.view(shape))


def inverse_cdf_draws(logits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per row of ``logits`` (M, V) from softmax(logits): the first category whose cumulative probability
    exceeds u * total, u ~ U(0, 1) (a zero-probability category is never drawn; each category's probability is
    honoured to float32 resolution, about 1e-7). Returns (ids (M,), their probabilities (M,))."""
    probs = logits.softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)
    total = cumulative[:, -1:]
    if not bool(torch.isfinite(total).all()):
        raise ValueError("the logits hold NaN or infinite values: cannot draw tokens from them")
    u = uniform((probs.shape[0], 1), generator, probs.device) * total  # u < 1, so u * total < total: an index < V
    drawn = torch.searchsorted(cumulative, u, right=True)
    return drawn[:, 0], probs.gather(-1, drawn)[:, 0]
