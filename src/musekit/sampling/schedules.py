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


def uniform(shape, generator: torch.Generator | None, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U(0, 1) on ``device``, drawn on the generator's own device: a CPU generator (a fixed function of the seed)
    gives the same draws whether the work runs on CPU or GPU."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def sample_mask_ratio(
    batch_size: int,
    generator: torch.Generator | None = None,
    schedule: str = "cosine",
    power: float = 2.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training masking rates: gamma(u) with u ~ U(0, 1); returns (B,) float32."""
    u = uniform((batch_size,), generator, device, torch.float64)
    return mask_ratio(u, schedule, power).float()
