"""A base-stage vocabulary: the subset of a tokenizer's codebook that a base transformer predicts.

A tokenizer trained for reconstruction spends its codes on small variations (colour jitter, sub-pixel edge
positions), so one flat region or one object edge is written with many near-identical codes. To a masked transformer
those are different classes: their cross-entropy is high and sampling them independently speckles the image. A
subset of ``k`` codes that covers the codebook (usage-weighted k-means over the code vectors, each cluster kept as
its code nearest the centre) keeps the reconstructions close while making every token far easier to predict.
Images are then tokenized with the subset (``VQModel.encode(images, allowed_codes)``), and the transformer's
``TransformerConfig.allowed_codes`` masks the other logits. The tokenizer itself is unchanged.
"""

from __future__ import annotations

import torch


def code_usage(ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """(codebook_size,) how often each code occurs in ``ids``."""
    return torch.bincount(ids.flatten().long(), minlength=codebook_size).float()


@torch.no_grad()
def select_codes(codebook: torch.Tensor, usage: torch.Tensor, k: int, iterations: int = 30) -> torch.Tensor:
    """``k`` code ids covering ``codebook`` (K, D): weighted k-means (weights: ``usage``, at least 1 per code),
    started from the ``k`` most used codes; each cluster is represented by its member nearest the centre.

    Returns sorted int64 ids (fewer than ``k`` only if clusters come out empty).
    """
    size = codebook.shape[0]
    if not 1 <= k <= size:
        raise ValueError(f"k must be in [1, {size}], got {k}")
    if usage.shape != (size,):
        raise ValueError(f"usage must have shape ({size},), got {tuple(usage.shape)}")
    codes = codebook.detach().float()
    weights = usage.float().clamp_min(1.0)
    centres = codes[usage.argsort(descending=True, stable=True)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(codes, centres).argmin(dim=1)
        totals = torch.zeros(k).index_add_(0, assign, weights)
        sums = torch.zeros_like(centres).index_add_(0, assign, codes * weights[:, None])
        filled = totals > 0
        centres[filled] = sums[filled] / totals[filled, None]
    assign = torch.cdist(codes, centres).argmin(dim=1)
    distance = (codes - centres[assign]).norm(dim=1)
    kept = []
    for cluster in range(k):
        members = (assign == cluster).nonzero().flatten()
        if len(members):
            kept.append(int(members[distance[members].argmin()]))
    return torch.tensor(sorted(set(kept)), dtype=torch.long)
