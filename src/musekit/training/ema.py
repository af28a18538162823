"""Exponential moving average of model weights (kept in fp32, saved with checkpoints)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """shadow = decay * shadow + (1 - decay) * weights, after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value.float(), 1.0 - self.decay)
            else:
                self.shadow[name].copy_(value)

    def to(self, device: torch.device | str) -> EMA:
        """Keep the shadow weights where the model trains (a GPU), so updates need no copies."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {sorted(missing)[:4]}")
        self.shadow = {k: state[k].float().to(self.shadow[k].device).clone() for k in self.shadow}

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
