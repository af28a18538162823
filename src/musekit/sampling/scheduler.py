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

With ``revise=True`` (image-to-image) every token may change: the known tokens compete in step 3 with the newly
sampled ones, each scored by the model's log-probability of its current value (the noise only on this step's draws),
and the ``n_k`` least confident of all positions are masked again (n_k = floor(U0 * gamma((k + 1) / K)), at least 1
until the last step; a row with U0 = 0 is left as it is). Under ``top_k`` a kept token outside the k most likely
codes scores -inf and is masked first. A token the prompt or its new neighbours disagree with is redrawn instead
of kept, so a partly re-masked image does not end as a patchwork of old and new tokens.
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


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """``logits`` with every value below the row's k-th largest set to -inf (unchanged when ``top_k`` is None)."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


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

    def num_masked_after(
        self, step_index: int, initial_unknown: torch.Tensor, unknown: torch.Tensor, revise: bool = False
    ) -> torch.Tensor:
        """Tokens left masked after step ``step_index``: (B,) int64 from U0 (B,) and the current unknown count
        (with ``revise`` known tokens may be masked again, so the count is not capped by the unknown ones)."""
        n = self.num_inference_steps
        if step_index >= n - 1:
            return torch.zeros_like(unknown)
        ratio = mask_ratio((step_index + 1) / n, self.config.mask_schedule, self.config.schedule_power)
        target = torch.floor(initial_unknown.double() * ratio).long()
        if revise:
            return torch.where(initial_unknown > 0, target.clamp_min(1), target)
        return torch.minimum(target.clamp_min(1), unknown - 1).clamp_min(0)

    def step(
        self,
        logits: torch.Tensor,
        timestep: int | torch.Tensor,
        ids: torch.Tensor,
        generator: torch.Generator | None = None,
        top_k: int | None = None,
        revise: bool = False,
    ) -> SchedulerOutput:
        """One decoding step.

        Args:
            logits: (B, L, codebook_size) float (with ``revise``, valid at every position).
            timestep: the current entry of ``timesteps`` (K-1 first, 0 last).
            ids: (B, L) or (B, h, w) int64 current tokens, ``mask_token_id`` where unknown.
            generator: random source for sampling and the confidence noise.
            top_k: sample only among the k most likely codes.
            revise: known tokens may be masked again (see the module docstring).

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
        if revise:
            return self._revising_step(logits, k, ids, unknown, shape, generator, top_k)

        # Only the masked positions are sampled (decided tokens never change), so the softmax and the noise cost
        # (masked tokens x codebook) rather than (all tokens x codebook): most of a step's non-matrix work.
        log_probs = torch.log_softmax(top_k_filter(logits[unknown].float(), top_k), dim=-1)  # (M, V), row-major
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
        return self._mask_least_confident(pred, confidence, num_masked, shape)

    def _revising_step(self, logits, k, ids, unknown, shape, generator, top_k) -> SchedulerOutput:
        """``step`` with ``revise``: sample the masked positions, then mask again the least confident of all."""
        log_probs = torch.log_softmax(top_k_filter(logits.float(), top_k), dim=-1)  # (B, L, V)
        sampled = sample_categorical(log_probs[unknown], generator)  # the same draws as ``step`` makes
        pred = ids.masked_scatter(unknown, sampled)
        num_masked = self.num_masked_after(k, self.initial_unknown.to(ids.device), unknown.sum(1), revise=True)
        if bool((num_masked == 0).all()):
            return SchedulerOutput(pred.view(shape), pred.view(shape))
        confidence = torch.gather(log_probs, -1, pred.unsqueeze(-1)).squeeze(-1)  # log p(current value), (B, L)
        tau = float(self.temperatures[k])
        if tau > 0:  # the noise only on this step's draws: a token the model is sure of is not masked by chance
            noise = gumbel_noise(confidence.shape, generator, logits.device)
            confidence = confidence + tau * noise.masked_fill(~unknown, 0.0)
        return self._mask_least_confident(pred, confidence, num_masked, shape)

    def _mask_least_confident(self, pred, confidence, num_masked, shape) -> SchedulerOutput:
        """Mask the ``num_masked`` (B,) least confident positions of each row of ``pred`` (B, L)."""
        order = confidence.argsort(dim=1)  # least confident first
        ranks = torch.arange(pred.shape[1], device=pred.device).expand_as(pred)
        remask = torch.zeros_like(pred, dtype=torch.bool).scatter_(1, order, ranks < num_masked.unsqueeze(1))
        prev = torch.where(remask, torch.full_like(pred, self.mask_token_id), pred)
        return SchedulerOutput(prev.view(shape), pred.view(shape))
