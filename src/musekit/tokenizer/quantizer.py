"""Vector quantizer with straight-through gradients, commitment loss, usage statistics and dead-code restarts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class QuantizerOutput:
    """Result of quantizing a latent map.

    Attributes:
        quantized: (B, D, h, w) codes with straight-through gradients to the encoder.
        ids: (B, h, w) int64 code indices.
        loss: scalar codebook loss + beta * commitment loss.
        perplexity: scalar exp(entropy) of the code histogram in this batch (K = every code used equally).
        usage: scalar fraction of codes used at least once in this batch.
    """

    quantized: torch.Tensor
    ids: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup (VQ-VAE) with optional l2-normalised codes (ViT-VQGAN).

    With ``l2_normalize=True`` both latents and codes live on the unit sphere and the lookup is by cosine similarity,
    which keeps far more codes in use than raw Euclidean lookup. Codes that fall out of use are restarted from
    random encoder outputs by ``restart_dead_codes`` (call it from the training loop).
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        l2_normalize: bool = True,
        usage_decay: float = 0.99,
        dead_code_threshold: float = 0.03,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.l2_normalize = l2_normalize
        self.usage_decay = usage_decay
        self.dead_code_threshold = dead_code_threshold
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.normal_(self.embedding.weight, std=1.0 if l2_normalize else 1.0 / codebook_size)
        # EMA share of assignments per code; not a learned parameter, but saved so training can resume. It starts
        # at zero so that the first restart revives every code the initial encoder never picks.
        self.register_buffer("code_usage", torch.zeros(codebook_size))

    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors as used for lookup."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    def _prepare(self, latents: torch.Tensor) -> torch.Tensor:
        return F.normalize(latents, dim=1) if self.l2_normalize else latents

    def nearest(self, latents: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D, h, w) latents -> (B, h, w) nearest code ids (among the ``allowed`` ids when given)."""
        z = self._prepare(latents).permute(0, 2, 3, 1)  # (B, h, w, D)
        flat = z.reshape(-1, self.dim)
        codes = self.codebook() if allowed is None else self.codebook()[allowed]
        if self.l2_normalize:
            ids = (flat @ codes.t()).argmax(dim=-1)
        else:
            distances = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(-1)[None]
            ids = distances.argmin(dim=-1)
        if allowed is not None:
            ids = allowed.to(ids.device)[ids]
        return ids.view(z.shape[:-1])

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h, w) ids -> (B, D, h, w) code vectors."""
        if ids.min() < 0 or ids.max() >= self.codebook_size:
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}); got [{ids.min()}, {ids.max()}]")
        return F.embedding(ids, self.codebook()).permute(0, 3, 1, 2)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        z = self._prepare(latents)
        ids = self.nearest(latents)
        quantized = self.lookup(ids)
        codebook_loss = F.mse_loss(quantized, z.detach())
        commitment_loss = F.mse_loss(z, quantized.detach())
        loss = codebook_loss + self.beta * commitment_loss
        quantized = z + (quantized - z).detach()  # straight-through estimator

        counts = torch.bincount(ids.flatten(), minlength=self.codebook_size).float()
        share = counts / counts.sum()
        if self.training:
            with torch.no_grad():
                self.code_usage.mul_(self.usage_decay).add_(share, alpha=1 - self.usage_decay)
        entropy = -(share * torch.log(share.clamp_min(1e-10))).sum()
        return QuantizerOutput(quantized, ids, loss, entropy.exp(), (counts > 0).float().mean())

    @torch.no_grad()
    def restart_dead_codes(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-initialise codes whose EMA usage share is below ``dead_code_threshold / K`` from random latents.

        Args:
            latents: (B, D, h, w) recent encoder outputs to draw replacements from.
            generator: random source for choosing the replacement vectors.

        Returns:
            The number of codes restarted.
        """
        dead = (self.code_usage < self.dead_code_threshold / self.codebook_size).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = latents.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)
        pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=generator, device=pool.device)
        noise = torch.randn(dead.numel(), self.dim, generator=generator, device=pool.device) * 1e-3
        self.embedding.weight.data[dead] = (pool[pick] + noise).to(self.embedding.weight.dtype)
        self.code_usage[dead] = 1.0 / self.codebook_size
        logger.debug("restarted %d dead codes", dead.numel())
        return int(dead.numel())
