"""A scheduler that reproduces diffusers' ``AmusedScheduler`` token for token (same generator consumption).

Differences from ``MaskGITScheduler`` (reference/muse.md 4.5): token values are drawn with ``torch.multinomial``;
the count left masked is floor(L * gamma((k+1)/K)) of *all* L tokens times ``starting_mask_ratio`` (diffusers'
inpainting passes the masked share); the cut-off is the (mask_len+1)-th smallest confidence; the temperature is
linspace(t0, t1, K), or linspace(t, 0.01, K) for a scalar.
"""

from __future__ import annotations

import math

import torch

from musekit.sampling.scheduler import SchedulerOutput


def _gumbel(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    noise = torch.zeros_like(like, device=device).uniform_(0, 1, generator=generator).to(like.device)
    return -torch.log((-torch.log(noise.clamp(1e-20))).clamp(1e-20))


class AmusedScheduler:
    def __init__(self, mask_token_id: int, masking_schedule: str = "cosine") -> None:
        if masking_schedule not in ("cosine", "linear"):
            raise ValueError(f"masking_schedule must be cosine or linear, got {masking_schedule!r}")
        self.mask_token_id = mask_token_id
        self.masking_schedule = masking_schedule
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

    def step(self, logits: torch.Tensor, timestep, ids: torch.Tensor, generator=None, top_k=None) -> SchedulerOutput:
        """logits (B, L, C), ids (B, L) or (B, h, w); ``top_k`` is not part of aMUSEd and must be None."""
        if top_k is not None:
            raise ValueError("the aMUSEd scheduler samples from the full distribution (top_k must be None)")
        shape = ids.shape
        sample = ids.reshape(ids.shape[0], -1)
        unknown = sample == self.mask_token_id
        probs = logits.softmax(dim=-1)
        flat = (probs.to(generator.device) if generator is not None else probs).float().reshape(-1, probs.shape[-1])
        pred = torch.multinomial(flat, 1, generator=generator).to(probs.device)[:, 0].view(*probs.shape[:-1])
        pred = torch.where(unknown, pred, sample)
        if int(timestep) == 0:
            return SchedulerOutput(pred.view(shape), pred.view(shape))
        step_idx = (self.timesteps == timestep).nonzero().to(sample.device)
        ratio = (step_idx + 1) / len(self.timesteps)
        gamma = torch.cos(ratio * math.pi / 2) if self.masking_schedule == "cosine" else 1 - ratio
        mask_len = (sample.shape[1] * (self.starting_mask_ratio * gamma)).floor()
        mask_len = torch.min(unknown.sum(dim=-1, keepdim=True) - 1, mask_len)
        mask_len = torch.max(torch.tensor([1], device=sample.device), mask_len)
        selected = torch.gather(probs, -1, pred[:, :, None])[:, :, 0]
        selected = torch.where(unknown, selected, torch.finfo(selected.dtype).max)
        temperature = self.temperatures.to(sample.device)[step_idx]
        confidence = torch.log(selected.clamp(1e-20)) + temperature * _gumbel(selected, generator)
        cut_off = torch.gather(torch.sort(confidence, dim=-1).values, 1, mask_len.long())
        prev = torch.where(confidence < cut_off, self.mask_token_id, pred)
        return SchedulerOutput(prev.view(shape), pred.view(shape))
