"""aMUSEd's VQ-GAN (diffusers ``VQModel`` with ``lookup_from_codebook``), parameter names kept for direct loading.

Fully convolutional, no attention: ResNet blocks with GroupNorm (eps 1e-6), stride-2 convs with (0, 1, 0, 1)
padding to go down, nearest x2 + conv to go up; a Euclidean nearest-code quantizer. Pixels are in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from musekit.config import BaseConfig, ConfigError


@dataclass(frozen=True)
class AmusedVQConfig(BaseConfig):
    """Field names follow diffusers' ``vqvae/config.json`` (block types are implied: down/up encoder blocks)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)
    layers_per_block: int = 2
    latent_channels: int = 64
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32
    vq_embed_dim: int | None = None
    sample_size: int = 32

    def __post_init__(self) -> None:
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError("AmusedVQConfig: block_out_channels must be multiples of norm_num_groups")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def codebook_size(self) -> int:
        return self.num_vq_embeddings

    @property
    def embed_dim(self) -> int:
        return self.vq_embed_dim or self.latent_channels


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


def _stage(cin: int, cout: int, layers: int, groups: int, resample: nn.Module | None, name: str) -> nn.Module:
    stage = nn.Module()
    stage.resnets = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(layers))
    if resample is not None:
        setattr(stage, name, nn.ModuleList([resample]))
    return stage


class _Conv(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=0 if stride == 2 else 1)


class AmusedVQModel(nn.Module):
    def __init__(self, config: AmusedVQConfig) -> None:
        super().__init__()
        c = self.config = config
        ch, g = c.block_out_channels, c.norm_num_groups
        enc = self.encoder = nn.Module()
        enc.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        enc.down_blocks = nn.ModuleList(
            _stage(
                ch[max(i - 1, 0)],
                ch[i],
                c.layers_per_block,
                g,
                _Conv(ch[i], 2) if i < len(ch) - 1 else None,
                "downsamplers",
            )  # fmt: skip
            for i in range(len(ch))
        )
        enc.mid_block = _stage(ch[-1], ch[-1], 2, g, None, "")
        enc.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        enc.conv_out = nn.Conv2d(ch[-1], c.latent_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(c.latent_channels, c.embed_dim, 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(c.num_vq_embeddings, c.embed_dim)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.latent_channels, 1)
        dec = self.decoder = nn.Module()
        rev = list(reversed(ch))
        dec.conv_in = nn.Conv2d(c.latent_channels, rev[0], 3, padding=1)
        dec.mid_block = _stage(rev[0], rev[0], 2, g, None, "")
        dec.up_blocks = nn.ModuleList(
            _stage(
                rev[max(i - 1, 0)],
                rev[i],
                c.layers_per_block + 1,
                g,
                _Conv(rev[i], 1) if i < len(rev) - 1 else None,
                "upsamplers",
            )  # fmt: skip
            for i in range(len(rev))
        )
        dec.conv_norm_out = nn.GroupNorm(g, rev[-1], eps=1e-6)
        dec.conv_out = nn.Conv2d(rev[-1], c.out_channels, 3, padding=1)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D, H/16, W/16) pre-quantization latents."""
        e = self.encoder
        h = e.conv_in(images)
        for block in e.down_blocks:
            for resnet in block.resnets:
                h = resnet(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0].conv(F.pad(h, (0, 1, 0, 1)))
        for resnet in e.mid_block.resnets:
            h = resnet(h)
        return self.quant_conv(e.conv_out(F.silu(e.conv_norm_out(h))))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, allowed_codes: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, h, w) by Euclidean nearest code (diffusers uses cdist + argmin), among ``allowed_codes``
        when given (as ``VQModel.encode``)."""
        latents = self.encode_latents(images)
        b, d, h, w = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.quantize.embedding.weight
        if allowed_codes is None:
            return torch.cdist(flat, codes).argmin(dim=1).view(b, h, w)
        allowed_codes = allowed_codes.to(flat.device)
        return allowed_codes[torch.cdist(flat, codes[allowed_codes]).argmin(dim=1)].view(b, h, w)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h, w) ids -> (B, 3, 16h, 16w) images clamped to [0, 1]."""
        d = self.decoder
        h = self.post_quant_conv(self.quantize.embedding(ids).permute(0, 3, 1, 2))
        h = d.conv_in(h)
        for resnet in d.mid_block.resnets:
            h = resnet(h)
        for block in d.up_blocks:
            for resnet in block.resnets:
                h = resnet(h)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0].conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return d.conv_out(F.silu(d.conv_norm_out(h))).clamp(0, 1)
