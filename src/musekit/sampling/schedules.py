"""The one mask-schedule table, shared by training (masking rate) and sampling (tokens left masked).

gamma(r) maps progress r in [0, 1] to the fraction of tokens masked: gamma(0) = 1 (all masked), gamma(1) = 0.
Training draws u ~ U(0, 1) and masks a fraction gamma(u) (for cosine: r = cos(pi u / 2), mean 2/pi, Muse 2.3).
"""

from __future__ import annotations

import math

import torch

from musekit.config import MASK_SCHEDULES


def mask_ratio(progress: torch.Tensor | float, schedule: str = "cosine", power: float = 2.0) -> torch.Tensor:
    """gamma(progress): the fraction of tokens still masked.

    Args:
        progress: r in [0, 1], a float or a tensor of any shape.
        schedule: "cosine" cos(pi r / 2), "linear" 1 - r, "arccos" arccos(r) / (pi / 2), "pow" 1 - r**power.
        power: the exponent of the "pow" schedule.
    """
    r = torch.as_tensor(progress, dtype=torch.float64).clamp(0.0, 1.0)
    if schedule == "cosine":
        out = torch.cos(r * math.pi / 2)
    elif schedule == "linear":
        out = 1.0 - r
    elif schedule == "arccos":
        out = torch.arccos(r) / (math.pi / 2)
    elif schedule == "pow":
        out = 1.0 - r**power
    else:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {MASK_SCHEDULES}")
    return out.clamp(0.0, 1.0)


def sample_mask_ratio(
    batch_size: int,
    generator: torch.Generator | None = None,
    schedule: str = "cosine",
    power: float = 2.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training masking rates: gamma(u) with u ~ U(0, 1); returns (B,) float32."""
    source = generator.device if generator is not None else device  # a CPU generator may drive GPU work
    u = torch.rand(batch_size, generator=generator, device=source, dtype=torch.float64).to(device)
    return mask_ratio(u, schedule, power).float()
