"""The shapes-world checker: reads a scene's attributes from pixels, and embeds images for FSD / similarity."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musekit.config import CheckerConfig
from musekit.data.shapes import IGNORE, LABEL_SPACES
from musekit.io.checkpoint import load_component

DEFAULT_CHECKER_DIR = Path(__file__).resolve().parent.parent / "assets" / "checker"


class ShapeChecker(nn.Module):
    """A small CNN with one classification head per attribute in ``LABEL_SPACES``.

    Images are (B, 3, H, W) floats in [0, 1] of any size (resized with antialiasing to ``config.image_size``).
    Features keep the spatial layout (a flattened 4x4 map), since position is an attribute.
    """

    def __init__(self, config: CheckerConfig) -> None:
        super().__init__()
        self.config = config
        # A stride-2 stem halves the resolution before any 3x3 work (cheap on CPU), then one stride-2 stage each.
        layers: list[nn.Module] = [nn.Conv2d(3, config.channels[0], 4, stride=2, padding=1), nn.SiLU()]
        current = config.channels[0]
        for ch in config.channels[1:]:
            layers += [
                nn.Conv2d(current, ch, 3, padding=1),
                nn.GroupNorm(8, ch),
                nn.SiLU(),
                nn.Conv2d(ch, ch, 3, stride=2, padding=1),
                nn.GroupNorm(8, ch),
                nn.SiLU(),
            ]
            current = ch
        self.body = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.project = nn.Linear(current * side * side, config.feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(config.feature_dim, len(v)) for name, v in LABEL_SPACES.items()})

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images * 2.0 - 1.0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, feature_dim) penultimate features."""
        return F.silu(self.project(self.body(self.prepare(images)).flatten(1)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attribute logits: name -> (B, num_classes)."""
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Predicted class index per attribute: name -> (B,) int64."""
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.heads}
        for start in range(0, images.shape[0], batch_size):
            for name, logits in self(images[start : start + batch_size]).items():
                outputs[name].append(logits.argmax(-1))
        return {name: torch.cat(v) for name, v in outputs.items()}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(B, feature_dim) features in batches (for FSD and image similarity)."""
        return torch.cat([self.features(images[s : s + batch_size]) for s in range(0, images.shape[0], batch_size)])


def checker_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over attributes of the cross-entropy on the samples where the attribute applies."""
    total = next(iter(logits.values())).new_zeros(())
    for name, value in logits.items():
        target = labels[name]
        if (target != IGNORE).any():
            total = total + F.cross_entropy(value, target, ignore_index=IGNORE)
    return total


def attribute_accuracy(predicted: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per attribute, the share of applicable samples predicted right."""
    result = {}
    for name, target in labels.items():
        valid = target != IGNORE
        if valid.any():
            result[name] = (predicted[name][valid] == target[valid]).float().mean().item()
    return result


def load_checker(path: str | Path | None = None) -> ShapeChecker:
    """Load a trained checker (default: the one bundled under ``musekit/assets/checker``)."""
    folder = Path(path) if path is not None else DEFAULT_CHECKER_DIR
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no trained checker in {folder}; train one with `musekit train-checker`")
    return load_component(ShapeChecker, CheckerConfig, folder)
