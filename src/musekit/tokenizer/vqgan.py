"""Fully convolutional VQGAN encoder/decoder (no attention, so any resolution can be tokenized)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from musekit.config import VQConfig
from musekit.tokenizer.quantizer import QuantizerOutput, VectorQuantizer


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Encoder(nn.Module):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        c = config
        channels = [c.base_channels * m for m in c.channel_mult]
        u = c.stem_unshuffle
        self.stem = nn.Sequential(nn.PixelUnshuffle(u) if u > 1 else nn.Identity())
        self.conv_in = nn.Conv2d(c.in_channels * u * u, channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        current = channels[0]
        for level, ch in enumerate(channels):
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(current, ch, c.norm_groups))
                current = ch
            if level < len(channels) - 1:
                blocks.append(nn.Conv2d(current, current, 4, stride=2, padding=1))
        blocks.append(ResBlock(current, current, c.norm_groups))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(c.norm_groups, current)
        self.conv_out = nn.Conv2d(current, c.latent_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(self.stem(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class PatchEncoder(nn.Module):
    """Each ``stem_unshuffle`` x ``stem_unshuffle`` patch alone to a latent (1x1 convolutions, no normalisation
    across positions): a code depends only on its own pixels, so a flat region is one repeated code."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        c = config
        u = c.stem_unshuffle
        width = c.base_channels * 2
        self.stem = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.conv_in = nn.Conv2d(c.in_channels * u * u, width, 1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(c.num_res_blocks))
        self.conv_out = nn.Conv2d(width, c.latent_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.stem(x))
        for block in self.blocks:
            h = h + block(F.silu(h))
        return self.conv_out(F.silu(h))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        c = config
        channels = [c.decoder_width * m for m in c.channel_mult][::-1]
        u = c.stem_unshuffle
        self.conv_in = nn.Conv2d(c.latent_dim, channels[0], 3, padding=1)
        blocks: list[nn.Module] = [ResBlock(channels[0], channels[0], c.norm_groups)]
        current = channels[0]
        for level, ch in enumerate(channels):
            for _ in range(c.decoder_blocks):
                blocks.append(ResBlock(current, ch, c.norm_groups))
                current = ch
            if level < len(channels) - 1:
                blocks.append(Upsample(current))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(c.norm_groups, current)
        self.conv_out = nn.Conv2d(current, c.in_channels * u * u, 3, padding=1)
        self.unstem = nn.PixelShuffle(u) if u > 1 else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(z))
        return self.unstem(self.conv_out(F.silu(self.norm_out(h))))


@dataclass
class VQOutput:
    """Training-time output of ``VQModel.forward``.

    Attributes:
        reconstruction: (B, 3, H, W) decoded images in [0, 1] space (not clamped, so gradients flow).
        quantizer: the ``QuantizerOutput`` (ids, codebook/commitment loss, usage statistics).
        latents: (B, D, h, w) pre-quantization encoder outputs (for dead-code restarts).
    """

    reconstruction: torch.Tensor
    quantizer: QuantizerOutput
    latents: torch.Tensor


class VQModel(nn.Module):
    """Image tokenizer. Pixels are (B, 3, H, W) floats in [0, 1]; H and W must be multiples of the factor."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = PatchEncoder(config) if config.encoder == "patch" else Encoder(config)
        self.quant_conv = nn.Conv2d(config.latent_dim, config.latent_dim, 1)
        self.quantizer = VectorQuantizer(
            config.codebook_size,
            config.latent_dim,
            beta=config.commitment_beta,
            l2_normalize=config.l2_normalize_codes,
            usage_decay=config.usage_decay,
            dead_code_threshold=config.dead_code_threshold,
        )
        self.post_quant_conv = nn.Conv2d(config.latent_dim, config.latent_dim, 1)
        self.decoder = Decoder(config)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.downsample_factor
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images of shape (B, {self.config.in_channels}, H, W); got {tuple(images.shape)}"
            )
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"image height and width must be multiples of {f}; got {tuple(images.shape[-2:])}")

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D, H/f, W/f) pre-quantization latents."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images * 2.0 - 1.0))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) code vectors -> (B, 3, h*f, w*f) images in [0, 1] space, unclamped."""
        return (self.decoder(self.post_quant_conv(codes)) + 1.0) / 2.0

    @torch.no_grad()
    def encode(self, images: torch.Tensor, allowed_codes: torch.Tensor | None = None) -> torch.Tensor:
        """Tokenize images.

        Args:
            images: (B, 3, H, W) float in [0, 1], H and W multiples of ``downsample_factor``.
            allowed_codes: optional (K,) ids: tokenize with this subset of the codebook only (the codes a base
                transformer with ``allowed_codes`` predicts).

        Returns:
            (B, H/f, W/f) int64 token ids.
        """
        return self.quantizer.nearest(self.encode_latents(images), allowed_codes)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Detokenize ids (B, h, w) int64 -> images (B, 3, h*f, w*f) float in [0, 1]."""
        if ids.ndim != 3:
            raise ValueError(f"expected ids of shape (B, h, w); got {tuple(ids.shape)}")
        return self.decode_codes(self.quantizer.lookup(ids)).clamp(0.0, 1.0)

    def forward(self, images: torch.Tensor, frozen_codes: bool = False) -> VQOutput:
        """Training forward. ``frozen_codes``: tokenize without gradients or codebook statistics and train only what
        decodes the codes (so every token a transformer learned keeps its meaning)."""
        if frozen_codes:
            with torch.no_grad():
                ids = self.encode(images)
                codes = self.quantizer.lookup(ids)
            zero = images.new_zeros(())
            return VQOutput(self.decode_codes(codes), QuantizerOutput(codes, ids, zero, zero, zero), codes)
        latents = self.encode_latents(images)
        quantized = self.quantizer(latents)
        return VQOutput(self.decode_codes(quantized.quantized), quantized, latents)
