"""Classifier-free guidance in the u + s (c - u) form (s = 1 + t of Muse's (1 + t) c - t u)."""

from __future__ import annotations

import torch

GUIDANCE_SCHEDULES = ("constant", "linear")


def guidance_scale_at(step_index: int, num_steps: int, scale: float, schedule: str = "constant") -> float:
    """The guidance scale at step ``step_index`` of ``num_steps``.

    "constant" returns ``scale``; "linear" ramps Muse's t linearly from 0 at the first step to ``scale - 1`` at the
    last, so early tokens are sampled with little guidance (Muse 2.7).
    """
    if schedule == "constant":
        return scale
    if schedule == "linear":
        progress = step_index / max(num_steps - 1, 1)
        return 1.0 + (scale - 1.0) * progress
    raise ValueError(f"unknown guidance schedule {schedule!r}; choose one of {GUIDANCE_SCHEDULES}")


def apply_guidance(uncond_logits: torch.Tensor, cond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond); a negative prompt's logits take the place of ``uncond_logits``."""
    return uncond_logits + scale * (cond_logits - uncond_logits)
