"""Image metrics: PSNR, and the Frechet distance between feature sets (FSD on checker features)."""

from __future__ import annotations

import numpy as np
import torch


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean PSNR in dB over a batch of images in [0, 1]: (B, 3, H, W) each."""
    mse = (reconstruction - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse)).mean()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (as FID does on Inception features)."""
    from scipy import linalg

    a = features_a.double().cpu().numpy()
    b = features_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
