"""The masked-token training objective (Muse 2.3, 2.6).

* masking rate r = gamma(u), u ~ U(0, 1) (cosine: r = cos(pi u / 2)); exactly round(r L) tokens (at least one) are
  masked, chosen by a random permutation;
* cross-entropy on the masked positions only, with optional label smoothing;
* conditioning dropout: each sample's text is *dropped* with probability p (keep = rand >= p) and replaced by the
  encoded empty prompt, so the model also learns the unconditional distribution used by guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from musekit.models.transformer import MaskedTransformer
from musekit.sampling.schedules import sample_mask_ratio, uniform
from musekit.text.base import TextEmbeddings


def mask_tokens(
    ids: torch.Tensor,
    mask_token_id: int,
    generator: torch.Generator | None = None,
    schedule: str = "cosine",
    power: float = 2.0,
    ratios: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask an exact number of tokens per sample.

    Args:
        ids: (B, L) or (B, h, w) int64 ground-truth tokens.
        mask_token_id: the [MASK] id.
        generator: random source for the rates and the positions.
        ratios: optional (B,) masking rates; drawn from the schedule when None.

    Returns:
        (inputs (B, L) with [MASK] at masked positions, mask (B, L) bool).
    """
    ids = ids.flatten(1)
    batch, length = ids.shape
    if ratios is None:
        ratios = sample_mask_ratio(batch, generator, schedule, power, device=ids.device)
    counts = torch.round(ratios.to(ids.device) * length).long().clamp(1, length)  # (B,)
    scores = uniform((batch, length), generator, ids.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a random permutation's rank of each position
    mask = ranks < counts.unsqueeze(1)
    return ids.masked_fill(mask, mask_token_id), mask


def masked_token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over masked positions only: logits (B, L, C), targets (B, L), mask (B, L) bool.

    ``weights`` (B, L) turns the mean into a weighted mean (personalization weights tokens by a soft object mask).
    """
    targets = targets.flatten(1)
    losses = F.cross_entropy(logits[mask].float(), targets[mask], label_smoothing=label_smoothing, reduction="none")
    if weights is None:
        return losses.mean()
    w = weights.flatten(1)[mask].float()
    return (losses * w).sum() / w.sum().clamp_min(1e-12)


def drop_conditioning(
    text: TextEmbeddings, empty: TextEmbeddings, p: float, generator: torch.Generator | None = None
) -> tuple[TextEmbeddings, torch.Tensor]:
    """Replace each sample's text by the empty prompt with probability ``p``.

    Returns:
        (the conditioning to train on, keep (B,) bool: True where the text was kept).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"conditioning dropout must be in [0, 1], got {p}")
    batch = len(text)
    keep = uniform((batch,), generator, text.hidden_states.device) >= p
    if len(empty) == 1:
        empty = empty.expand(batch)
    return text.where(keep, empty), keep


@dataclass
class MaskedLossOutput:
    """``loss`` (scalar, differentiable), ``accuracy`` on masked tokens, ``mask_fraction`` of tokens masked."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    mask_fraction: torch.Tensor


def masked_modeling_loss(
    model: MaskedTransformer,
    ids: torch.Tensor,
    text: TextEmbeddings,
    empty_text: TextEmbeddings,
    generator: torch.Generator | None = None,
    cond_ids: torch.Tensor | None = None,
    cond_dropout: float = 0.1,
    label_smoothing: float = 0.0,
    schedule: str = "cosine",
    weights: torch.Tensor | None = None,
    context_ids: torch.Tensor | None = None,
    ratios: torch.Tensor | None = None,
) -> MaskedLossOutput:
    """One training loss evaluation for the base (``cond_ids`` None) or super-resolution model.

    ``weights`` (B, h, w) optionally weights each token's loss (e.g. up-weighting the tokens an object touches).
    ``context_ids`` (B, h, w) optionally replaces ``ids`` at the unmasked positions (the model sees them as context;
    the targets at masked positions stay ``ids``). ``ratios`` (B,) optionally sets each sample's masking rate
    (drawn from ``schedule`` when None).
    """
    config = getattr(model, "module", model).config  # unwrap DistributedDataParallel
    inputs, mask = mask_tokens(ids, config.mask_token_id, generator, schedule, ratios=ratios)
    if context_ids is not None:
        inputs = torch.where(mask, inputs, context_ids.flatten(1))
    text, _ = drop_conditioning(text, empty_text, cond_dropout, generator)
    logits = model(inputs, text=text, cond_ids=cond_ids)
    targets = ids.flatten(1)
    loss = masked_token_loss(logits, targets, mask, label_smoothing, weights)
    with torch.no_grad():
        accuracy = (logits.argmax(-1)[mask] == targets[mask]).float().mean()
    return MaskedLossOutput(loss, accuracy, mask.float().mean())
