"""The base masked-token transformer (Muse section 2.2): image tokens + [MASK] -> logits over the codebook."""

from __future__ import annotations

import torch
from torch import nn

from musekit.config import TransformerConfig
from musekit.models.layers import ContextCache, TransformerBlock, init_weights
from musekit.text.base import TextEmbeddings


class MaskedTransformer(nn.Module):
    """Bidirectional transformer over ``grid_size**2`` image tokens with cross-attention to projected text.

    Token id ``config.mask_token_id`` (= codebook size) is the [MASK] token. The network knows nothing about
    masking schedules, guidance or losses: ``forward`` maps ids and context to logits.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        p2 = config.patch_size**2
        self.token_embed = nn.Embedding(config.vocab_size, d)
        # p x p tokens -> one position of the body and back (identity when patch_size is 1)
        self.patch_in = nn.Linear(p2 * d, d) if p2 > 1 else None
        self.patch_out = nn.Linear(d, p2 * d) if p2 > 1 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.body_len, d))  # learned 2-D positions, row-major
        self.text_proj = nn.Linear(config.text_dim, d)
        self.text_norm = nn.LayerNorm(d)
        self.pooled_proj = nn.Linear(config.text_dim, d) if config.use_pooled_text else None
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.num_heads, config.mlp_ratio, config.dropout) for _ in range(config.num_layers)
        )
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.codebook_size)  # logits over the codebook only, never [MASK]
        # a large negative bias on the logits of codes outside ``config.allowed_codes`` (not saved: the config
        # carries the subset); finite, so guidance's difference of logits stays a number, and safe in fp16
        bias = None
        if config.allowed_codes:
            bias = torch.full((config.codebook_size,), -1e4)
            bias[list(config.allowed_codes)] = 0.0
        self.register_buffer("code_bias", bias, persistent=False)
        init_weights(self)
        nn.init.normal_(self.pos_embed, std=0.02)

    # --- patches -----------------------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) per-token rows -> (B, L / p**2, p**2 * C), each row a p x p block of the token grid."""
        p = self.config.patch_size
        if p == 1:
            return x
        b, _, c = x.shape
        n = self.config.grid_size // p
        return x.view(b, n, p, n, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, n * n, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of ``patchify``: (B, L / p**2, p**2 * C) -> (B, L, C) in row-major token order."""
        p = self.config.patch_size
        if p == 1:
            return x
        b = x.shape[0]
        n = self.config.grid_size // p
        c = x.shape[-1] // (p * p)
        return x.view(b, n, n, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, n * p * n * p, c)

    @property
    def cross_attentions(self) -> list[nn.Module]:
        """Every cross-attention module, in depth order (the order of ``ContextCache.keys``)."""
        return [block.cross_attn for block in self.blocks]

    @property
    def text_attentions(self) -> list[nn.Module]:
        """The attentions whose ``to_k``/``to_v`` read ``project_text``'s output directly: what Perfusion edits."""
        return self.cross_attentions

    # --- context ---------------------------------------------------------------------------------------------
    def project_text(self, text: TextEmbeddings) -> tuple[torch.Tensor, torch.Tensor]:
        """Text (B, T, text_dim) -> (context (B, T, hidden), mask (B, T) bool)."""
        if text.hidden_states.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text states have width {text.hidden_states.shape[-1]}, the model expects {self.config.text_dim}"
            )
        mask = text.attention_mask.bool().clone()
        mask[~mask.any(dim=1), 0] = True  # a fully masked row would make attention NaN
        return self.text_norm(self.text_proj(text.hidden_states)), mask

    def build_context(
        self, text: TextEmbeddings, cond_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything the image tokens cross-attend to: (B, S, hidden) and its (B, S) mask."""
        if cond_ids is not None:
            raise ValueError("the base transformer takes no low-resolution tokens")
        return self.project_text(text)

    def token_bias(self, text: TextEmbeddings) -> torch.Tensor | None:
        if self.pooled_proj is None:
            return None
        return self.pooled_proj(text.pooled).unsqueeze(1)  # (B, 1, hidden)

    def precompute(
        self,
        text: TextEmbeddings,
        cond_ids: torch.Tensor | None = None,
        key_text: TextEmbeddings | None = None,
    ) -> ContextCache:
        """Compute every cross-attention's keys and values once (reused across decoding steps).

        Args:
            text: encoded prompts, batch B.
            cond_ids: (B, h, w) low-resolution tokens (super-resolution model only).
            key_text: optional different encoding for the key pathway (Perfusion's global key-locking).
        """
        context, mask = self.build_context(text, cond_ids)
        key_context = None if key_text is None else self.build_context(key_text, cond_ids)[0]
        keys, values = [], []
        for attn in self.cross_attentions:
            k, v = attn.project_kv(context, key_context)
            keys.append(k)
            values.append(v)
        return ContextCache(keys, values, mask, self.token_bias(text))

    # --- network ---------------------------------------------------------------------------------------------
    def forward(
        self,
        ids: torch.Tensor,
        text: TextEmbeddings | None = None,
        cond_ids: torch.Tensor | None = None,
        cache: ContextCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict token logits.

        Args:
            ids: (B, h, w) or (B, L) int64 in [0, codebook_size], where codebook_size is [MASK].
            text: encoded prompts (needed unless ``cache`` is given).
            cond_ids: (B, h', w') low-resolution tokens (super-resolution model only).
            cache: output of ``precompute`` (then ``text`` and ``cond_ids`` are ignored).
            positions: optional (B, M) token indices: only their logits are computed (the output head is skipped
                for tokens already decided).

        Returns:
            (B, L, codebook_size) float logits, or (B, M, codebook_size) with ``positions``; 10^4 lower outside
            ``config.allowed_codes`` when the model predicts a subset of the codebook.
        """
        ids = ids.flatten(1)  # (B, L)
        if ids.shape[1] != self.config.seq_len:
            raise ValueError(f"expected {self.config.seq_len} tokens per image, got {ids.shape[1]}")
        if cache is None:
            if text is None:
                raise ValueError("forward needs `text` or a precomputed `cache`")
            cache = self.precompute(text, cond_ids)
        x = self.token_embed(ids)  # (B, L, D)
        if self.patch_in is not None:
            x = self.patch_in(self.patchify(x))  # (B, L / p**2, D)
        x = x + self.pos_embed
        if cache.token_bias is not None:
            x = x + cache.token_bias
        for block, k, v in zip(self.blocks, cache.keys, cache.values):
            x = block(x, (k, v), cache.mask)
        if self.patch_out is not None:
            x = self.unpatchify(self.patch_out(x))  # (B, L, D)
        x = self.norm_out(x)
        if positions is not None:
            x = x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, M, D)
        logits = self.head(x)  # (B, L or M, codebook_size)
        return logits if self.code_bias is None else logits + self.code_bias
