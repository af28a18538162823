"""MaskGIT parallel decoding (Chang et al. 2022; Muse 2.8) with diffusers' scheduler vocabulary.

One step k of K (``timestep`` counts down K-1 .. 0):
  1. sample every masked position from softmax(logits) (optionally top-k filtered; Gumbel-max, with the softmax
     and the noise computed at the masked positions only); known tokens are kept;
  2. confidence = log p(sampled) + tau_k * Gumbel noise, tau_k annealed linearly from temperature[0] to [1];
  3. keep masked the ``n_k`` least confident newly sampled tokens, where
        n_k = clamp(floor(U0 * gamma((k + 1) / K)), 1, U_k - 1),   n_{K-1} = 0,
     U0 = tokens unknown at the start of decoding (relative to U0, so inpainting a region follows the full
     schedule inside it), U_k = tokens unknown before this step. Known tokens never change.
For U0 = 256 and K = 12 with the cosine schedule: 253, 247, 236, 221, 203, 181, 155, 128, 97, 66, 33, 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from musekit.config import SchedulerConfig
from musekit.sampling.schedules import mask_ratio, uniform


@dataclass
class SchedulerOutput:
    """``prev_ids``: (B, L) ids after this step (some still [MASK]); ``pred_ids``: (B, L) fully predicted ids."""

    prev_ids: torch.Tensor
    pred_ids: torch.Tensor


def _exponential(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """E = -log U ~ Exp(1) on ``device``, U drawn on the generator's own device (a CPU generator drives GPU
    sampling) and kept away from 0 and 1."""
    return uniform(shape, generator, device).clamp_(1e-20, 1.0 - 1e-7).log_().neg_()


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Gumbel(0, 1) noise -log(-log U) = -log E."""
    return _exponential(shape, generator, device).log_().neg_()


def sample_categorical(log_probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``log_probs`` (..., V) by Gumbel-max, argmax(log p - log E): the Gumbel noise without its
    final negation."""
    return (log_probs - _exponential(log_probs.shape, generator, log_probs.device).log_()).argmax(-1)


class MaskGITScheduler:
    """Confidence-based iterative unmasking. Create one per sampling call (it keeps U0 for the call)."""

    def __init__(self, mask_token_id: int, config: SchedulerConfig | None = None) -> None:
        self.mask_token_id = mask_token_id
        self.config = config or SchedulerConfig()
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.temperatures: torch.Tensor | None = None
        self.initial_unknown: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, temperature: float | tuple[float, float] | None = None) -> None:
        """Prepare ``num_inference_steps`` steps; ``temperature`` (start, end) or a start annealed to 0."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if temperature is None:
            temperature = self.config.temperature
        if isinstance(temperature, int | float):
            temperature = (float(temperature), 0.0)
        start, end = temperature
        if start < 0 or end < 0:
            raise ValueError("temperature must be >= 0")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1)
        self.temperatures = torch.linspace(start, end, num_inference_steps)
        self.initial_unknown = None

    def step_index(self, timestep: int | torch.Tensor) -> int:
        assert self.num_inference_steps is not None, "call set_timesteps first"
        return self.num_inference_steps - 1 - int(timestep)

    def num_masked_after(self, step_index: int, initial_unknown: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
        """Tokens left masked after step ``step_index``: (B,) int64 from U0 (B,) and the current unknown count."""
        n = self.num_inference_steps
        if step_index >= n - 1:
            return torch.zeros_like(unknown)
        ratio = mask_ratio((step_index + 1) / n, self.config.mask_schedule, self.config.schedule_power)
        target = torch.floor(initial_unknown.double() * ratio).long()
        return torch.minimum(target.clamp_min(1), unknown - 1).clamp_min(0)

    def step(
        self,
        logits: torch.Tensor,
        timestep: int | torch.Tensor,
        ids: torch.Tensor,
        generator: torch.Generator | None = None,
        top_k: int | None = None,
    ) -> SchedulerOutput:
        """One decoding step.

        Args:
            logits: (B, L, codebook_size) float.
            timestep: the current entry of ``timesteps`` (K-1 first, 0 last).
            ids: (B, L) or (B, h, w) int64 current tokens, ``mask_token_id`` where unknown.
            generator: random source for sampling and the confidence noise.
            top_k: sample only among the k most likely codes.

        Returns:
            ``SchedulerOutput(prev_ids, pred_ids)`` shaped like ``ids``.
        """
        shape = ids.shape
        ids = ids.flatten(1)
        if logits.shape[:2] != ids.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match ids {tuple(ids.shape)}")
        k = self.step_index(timestep)
        unknown = ids == self.mask_token_id  # (B, L)
        if self.initial_unknown is None or k == 0:
            self.initial_unknown = unknown.sum(1)

        # Only the masked positions are sampled (decided tokens never change), so the softmax and the noise cost
        # (masked tokens x codebook) rather than (all tokens x codebook): most of a step's non-matrix work.
        logits = logits[unknown].float()  # (M, V), the masked positions in row-major order
        if top_k is not None and top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        log_probs = torch.log_softmax(logits, dim=-1)
        sampled = sample_categorical(log_probs, generator)
        pred = ids.masked_scatter(unknown, sampled)

        num_masked = self.num_masked_after(k, self.initial_unknown.to(ids.device), unknown.sum(1))
        if bool((num_masked == 0).all()):
            return SchedulerOutput(pred.view(shape), pred.view(shape))
        chosen = torch.gather(log_probs, -1, sampled.unsqueeze(-1)).squeeze(-1)  # log p(sampled), (M,)
        confidence = torch.zeros(ids.shape, dtype=chosen.dtype, device=ids.device).masked_scatter(unknown, chosen)
        tau = float(self.temperatures[k])
        if tau > 0:
            confidence = confidence + tau * gumbel_noise(confidence.shape, generator, logits.device)
        confidence = confidence.masked_fill(~unknown, float("inf"))
        order = confidence.argsort(dim=1)  # least confident first
        ranks = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        remask = torch.zeros_like(unknown).scatter_(1, order, ranks < num_masked.unsqueeze(1))
        prev = torch.where(remask, torch.full_like(pred, self.mask_token_id), pred)
        return SchedulerOutput(prev.view(shape), pred.view(shape))
