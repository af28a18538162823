"""Building blocks: attention with explicit to_q/to_k/to_v/to_out projections, MLP, transformer blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ContextCache:
    """Cross-attention keys and values computed once per sampling call and reused at every decoding step.

    Attributes:
        keys: per cross-attention layer, (B, heads, S, head_dim).
        values: per cross-attention layer, (B, heads, S, head_dim).
        mask: (B, S) bool, True where the context position may be attended to.
        token_bias: (B, 1, hidden) or None, a per-sample vector added to every image token (pooled text).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    token_bias: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    def index_select(self, index: torch.Tensor) -> ContextCache:
        pick = lambda t: t.index_select(0, index)  # noqa: E731
        bias = None if self.token_bias is None else pick(self.token_bias)
        return ContextCache([pick(k) for k in self.keys], [pick(v) for v in self.values], pick(self.mask), bias)

    def repeat_interleave(self, repeats: int) -> ContextCache:
        rep = lambda t: t.repeat_interleave(repeats, 0)  # noqa: E731
        bias = None if self.token_bias is None else rep(self.token_bias)
        return ContextCache([rep(k) for k in self.keys], [rep(v) for v in self.values], rep(self.mask), bias)


class Attention(nn.Module):
    """Multi-head attention with explicit ``to_q``, ``to_k``, ``to_v`` and ``to_out`` linear layers.

    Perfusion wraps ``to_k``/``to_v`` of the cross-attentions, so they must stay plain submodules that map the
    context (B, S, context_dim) to (B, S, inner_dim).
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        context_dim: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        out_bias: bool | None = None,
    ):
        super().__init__()
        context_dim = context_dim or query_dim
        head_dim = head_dim or query_dim // heads
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.to_out = nn.Linear(inner, query_dim, bias=bias if out_bias is None else out_bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, S, head_dim)

    def project_kv(
        self, context: torch.Tensor, key_context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, S, C) -> keys, values (B, heads, S, head_dim).

        ``key_context`` (same shape) feeds the key pathway instead of ``context`` when given (global key-locking).
        """
        keys = self.to_k(context if key_context is None else key_context)
        return self._split(keys), self._split(self.to_v(context))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from x (B, N, query_dim) to ``context`` (default: x itself) or to precomputed ``kv``.

        Args:
            mask: optional (B, S) bool, True where the key may be attended to.
        """
        query = self._split(self.to_q(x))  # (B, heads, N, head_dim)
        keys, values = kv if kv is not None else self.project_kv(x if context is None else context)
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=attn_mask)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x), approximate="tanh")))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + MLP (the super-resolution model's low-resolution token encoder)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention over image tokens, cross-attention to the context, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x)))  # (B, N, D)
        x = x + self.dropout(self.cross_attn(self.norm2(x), kv=kv, mask=mask))
        return x + self.dropout(self.mlp(self.norm3(x)))


def init_weights(module: nn.Module) -> None:
    """GPT-style init: N(0, 0.02) linears and embeddings, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
