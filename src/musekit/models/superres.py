"""The super-resolution transformer (Muse section 2.4), conditioned on the base model's tokens."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from musekit.config import SuperResConfig
from musekit.models.layers import EncoderBlock, init_weights
from musekit.models.transformer import MaskedTransformer
from musekit.text.base import TextEmbeddings


class SuperResTransformer(MaskedTransformer):
    """Masked transformer over high-resolution tokens.

    The low-resolution tokens pass through a small self-attention encoder; its outputs are concatenated with the
    projected text, and every high-resolution cross-attention attends to [low-res tokens ; text]. With
    ``aligned_cond`` each encoded low-resolution token is also added to the high-resolution tokens it covers.
    """

    def __init__(self, config: SuperResConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.cond_embed = nn.Embedding(config.cond_codebook_size, d)
        self.cond_pos_embed = nn.Parameter(torch.zeros(1, config.cond_grid_size**2, d))
        self.cond_blocks = nn.ModuleList(
            EncoderBlock(d, config.num_heads, config.mlp_ratio, config.dropout) for _ in range(config.num_cond_layers)
        )
        self.cond_norm = nn.LayerNorm(d)
        init_weights(self.cond_blocks)
        nn.init.normal_(self.cond_embed.weight, std=0.02)
        nn.init.normal_(self.cond_pos_embed, std=0.02)
        self.cond_to_tokens = nn.Linear(d, d) if config.aligned_cond else None
        if self.cond_to_tokens is not None:  # zero: a model without the path is where training starts from
            nn.init.zeros_(self.cond_to_tokens.weight)
            nn.init.zeros_(self.cond_to_tokens.bias)

    def encode_low_res(self, cond_ids: torch.Tensor) -> torch.Tensor:
        """(B, h', w') low-resolution ids -> (B, h'*w', hidden) encoded tokens."""
        c = self.config
        cond_ids = cond_ids.flatten(1)
        if cond_ids.shape[1] != c.cond_grid_size**2:
            raise ValueError(f"expected {c.cond_grid_size**2} low-resolution tokens, got {cond_ids.shape[1]}")
        if cond_ids.min() < 0 or cond_ids.max() >= c.cond_codebook_size:
            raise ValueError(f"low-resolution ids must lie in [0, {c.cond_codebook_size})")
        x = self.cond_embed(cond_ids) + self.cond_pos_embed
        for block in self.cond_blocks:
            x = block(x)
        return self.cond_norm(x)

    def aligned_bias(self, cond_ids: torch.Tensor) -> torch.Tensor:
        """(B, body_len, hidden): each low-resolution token's encoding, projected, at the high-resolution positions
        it covers (nearest upsampling of the low-resolution grid to the body grid)."""
        c = self.config
        low = self.encode_low_res(cond_ids)  # (B, S_low, D)
        grid = c.cond_grid_size
        body = c.grid_size // c.patch_size
        low = low.transpose(1, 2).reshape(low.shape[0], -1, grid, grid)
        up = F.interpolate(low, size=(body, body), mode="nearest").flatten(2).transpose(1, 2)
        return self.cond_to_tokens(up)

    def precompute(self, text: TextEmbeddings, cond_ids: torch.Tensor | None = None, key_text=None):
        cache = super().precompute(text, cond_ids, key_text)
        if self.cond_to_tokens is None:
            return cache
        aligned = self.aligned_bias(cond_ids)
        return replace(cache, token_bias=aligned if cache.token_bias is None else cache.token_bias + aligned)

    def build_context(
        self, text: TextEmbeddings, cond_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if cond_ids is None:
            raise ValueError("the super-resolution transformer needs the low-resolution tokens `cond_ids`")
        text_context, text_mask = self.project_text(text)
        low_res = self.encode_low_res(cond_ids)  # (B, S_low, D)
        if low_res.shape[0] != text_context.shape[0]:
            raise ValueError("cond_ids and text must have the same batch size")
        context = torch.cat([low_res, text_context], dim=1)
        mask = torch.cat([torch.ones(low_res.shape[:2], dtype=torch.bool, device=low_res.device), text_mask], dim=1)
        return context, mask
