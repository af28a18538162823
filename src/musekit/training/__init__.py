"""Training objectives (plain functions outside the models)."""

from musekit.training.objectives import (
    MaskedLossOutput,
    drop_conditioning,
    mask_tokens,
    masked_modeling_loss,
    masked_token_loss,
)

__all__ = ["MaskedLossOutput", "drop_conditioning", "mask_tokens", "masked_modeling_loss", "masked_token_loss"]
