"""Tokenizer training losses: L1/L2 reconstruction, patch-GAN adversarial loss, optional local perceptual loss."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VQLossWeights:
    """Weights of the tokenizer loss terms (Muse Table 5 uses perceptual 0.05 and adversarial 0.1)."""

    l1: float = 1.0
    l2: float = 1.0
    quantizer: float = 1.0
    perceptual: float = 0.05
    adversarial: float = 0.1


def reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, l1: float = 1.0, l2: float = 1.0
) -> torch.Tensor:
    """Weighted L1 + L2 pixel loss between (B, 3, H, W) images."""
    return l1 * F.l1_loss(reconstruction, target) + l2 * F.mse_loss(reconstruction, target)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming): one real/fake logit per receptive-field patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        current = channels
        for i in range(1, num_layers):
            nxt = channels * min(2**i, 8)
            layers += [nn.Conv2d(current, nxt, 4, 2, 1), nn.GroupNorm(8, nxt), nn.LeakyReLU(0.2)]
            current = nxt
        layers.append(nn.Conv2d(current, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, h, w) patch logits."""
        return self.net(images * 2.0 - 1.0)


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# VGG16 "features" layout (torchvision naming), so a locally available VGG16 state dict loads by key.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on VGG16 features; used only when VGG16 weights exist locally.

    musekit never downloads weights. Point ``from_local`` at a safetensors file holding torchvision's
    ``vgg16().features`` state dict (keys ``features.N.weight``/``.bias``); without one the loss is disabled.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_local(cls, path: str | Path | None) -> PerceptualLoss | None:
        """Load VGG16 feature weights from ``path``; return None (loss disabled) when none are available."""
        if path is None or not Path(path).is_file():
            logger.info("perceptual loss disabled: no local VGG16 weights (%s)", path)
            return None
        module = cls()
        state = {k.removeprefix("features."): v for k, v in load_file(str(path)).items() if k.startswith("features.")}
        missing, unexpected = module.features.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} is not a VGG16 features state dict: missing {missing[:4]}, unexpected {unexpected[:4]}"
            )
        return module.eval()

    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                out.append(F.normalize(x, dim=1))
        return out

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over layers of the squared distance between unit-normalised features; images in [0, 1]."""
        loss = reconstruction.new_zeros(())
        for a, b in zip(self._taps(reconstruction), self._taps(target)):
            loss = loss + (a - b).pow(2).sum(1).mean()
        return loss / len(_TAPS)
