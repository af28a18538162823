"""The aMUSEd U-ViT (diffusers ``UVit2DModel``) in musekit's style, parameter names kept for direct loading.

Layout (reference/muse.md section 4.2): token embedding + RMSNorm + 1x1 conv; a conv block (optional 2x2
down-sampling; ConvNeXt blocks with adaptive scale/shift, each followed by a block whose two attentions both read the
text); a stack of transformer layers (AdaLN-continuous RMS norms, self-attention, cross-attention, GEGLU MLP under an
AdaLN-continuous LayerNorm); the mirrored conv block (optional 2x2 up-sampling); a 1x1-conv MLM head. The global
condition is the pooled text embedding concatenated with sinusoidal micro-conditioning embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from musekit.config import UVitConfig
from musekit.models.layers import Attention, ContextCache


def timestep_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cos first (diffusers' flip_sin_to_cos=True, downscale_freq_shift=0): (N,) -> (N, dim)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    angles = values[:, None].float() * torch.exp(exponent)[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class AdaNorm(nn.Module):
    """norm(x) * (1 + scale) + shift, (scale, shift) = Linear(SiLU(condition)) (AdaLayerNormContinuous)."""

    def __init__(self, dim: int, cond_dim: int, c: UVitConfig, kind: str) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * dim, bias=c.use_bias)
        if kind == "rms":
            self.norm = RMSNorm(dim, c.layer_norm_eps, c.ln_elementwise_affine)
        else:
            self.norm = nn.LayerNorm(dim, c.layer_norm_eps, c.ln_elementwise_affine, bias=c.use_bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(cond)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None] + shift[:, None]


class GlobalResponseNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNextBlock(nn.Module):
    def __init__(self, c: UVitConfig) -> None:
        super().__init__()
        ch, wide = c.block_out_channels, 4 * c.block_out_channels
        self.depthwise = nn.Conv2d(ch, ch, 3, padding=1, groups=ch, bias=c.use_bias)
        self.norm = RMSNorm(ch, c.layer_norm_eps, c.ln_elementwise_affine)
        self.channelwise_linear_1 = nn.Linear(ch, wide, bias=c.use_bias)
        self.channelwise_norm = GlobalResponseNorm(wide)
        self.channelwise_linear_2 = nn.Linear(wide, ch, bias=c.use_bias)
        self.cond_embeds_mapper = nn.Linear(c.hidden_size, 2 * ch, bias=c.use_bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.depthwise(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        h = self.channelwise_linear_2(self.channelwise_norm(F.gelu(self.channelwise_linear_1(h))))
        x = x + h.permute(0, 3, 1, 2)
        scale, shift = self.cond_embeds_mapper(F.silu(cond)).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class TextAttentionBlock(nn.Module):
    """diffusers' SkipFFTransformerBlock: two attentions, both to the (mapped) text, no MLP."""

    def __init__(self, c: UVitConfig) -> None:
        super().__init__()
        ch, heads = c.block_out_channels, c.block_num_heads
        self.kv_mapper = nn.Linear(c.hidden_size, ch, bias=c.use_bias) if c.hidden_size != ch else None
        self.norm1 = RMSNorm(ch, 1e-6)
        self.attn1 = Attention(ch, heads, context_dim=ch, bias=c.use_bias)
        self.norm2 = RMSNorm(ch, 1e-6)
        self.attn2 = Attention(ch, heads, context_dim=ch, bias=c.use_bias)

    def map_context(self, context: torch.Tensor) -> torch.Tensor:
        return self.kv_mapper(F.silu(context)) if self.kv_mapper is not None else context

    def forward(self, x: torch.Tensor, kv1, kv2) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), kv=kv1)
        return x + self.attn2(self.norm2(x), kv=kv2)


class Resample(nn.Module):
    """RMS norm (channels last) then a 2x2 stride-2 conv (down) or transposed conv (up)."""

    def __init__(self, c: UVitConfig, up: bool) -> None:
        super().__init__()
        ch = c.block_out_channels
        self.norm = RMSNorm(ch, c.layer_norm_eps, c.ln_elementwise_affine)
        conv = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = conv(ch, ch, kernel_size=2, stride=2, bias=c.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class ConvStage(nn.Module):
    """diffusers' UVitBlock."""

    def __init__(self, c: UVitConfig, downsample: bool, upsample: bool) -> None:
        super().__init__()
        self.downsample = Resample(c, up=False) if downsample else None
        self.res_blocks = nn.ModuleList(ConvNextBlock(c) for _ in range(c.num_res_blocks))
        self.attention_blocks = nn.ModuleList(TextAttentionBlock(c) for _ in range(c.num_res_blocks))
        self.upsample = Resample(c, up=True) if upsample else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor, kvs: list) -> torch.Tensor:
        """``kvs``: two (keys, values) pairs per attention block, in order."""
        if self.downsample is not None:
            x = self.downsample(x)
        for index, (res, attn) in enumerate(zip(self.res_blocks, self.attention_blocks)):
            x = res(x, cond)
            b, ch, h, w = x.shape
            tokens = attn(x.flatten(2).transpose(1, 2), kvs[2 * index], kvs[2 * index + 1])
            x = tokens.transpose(1, 2).reshape(b, ch, h, w)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, inner: int, bias: bool) -> None:
        super().__init__()
        self.net = nn.ModuleList([nn.Module(), nn.Identity(), nn.Linear(inner, dim, bias=bias)])
        self.net[0].proj = nn.Linear(dim, 2 * inner, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.net[0].proj(x).chunk(2, dim=-1)
        return self.net[2](hidden * F.gelu(gate))


class UVitLayer(nn.Module):
    def __init__(self, c: UVitConfig) -> None:
        super().__init__()
        d, heads = c.hidden_size, c.num_attention_heads
        self.norm1 = AdaNorm(d, d, c, "rms")
        self.attn1 = Attention(d, heads, bias=c.use_bias)
        self.norm2 = AdaNorm(d, d, c, "rms")
        self.attn2 = Attention(d, heads, context_dim=d, bias=c.use_bias)
        self.norm3 = AdaNorm(d, d, c, "layer")
        self.ff = GEGLUFeedForward(d, c.intermediate_size, c.use_bias)

    def forward(self, x: torch.Tensor, kv, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x, cond))
        x = x + self.attn2(self.norm2(x, cond), kv=kv)
        return x + self.ff(self.norm3(x, cond))


class UVitTransformer(nn.Module):
    """ids (B, H, W) + text states (B, T, encoder_hidden_size) + pooled text (B, cond_embed_dim) + micro-conditions
    (B, 5) -> logits (B, H*W, codebook_size)."""

    def __init__(self, config: UVitConfig) -> None:
        super().__init__()
        c = self.config = config
        self.encoder_proj = nn.Linear(c.encoder_hidden_size, c.hidden_size, bias=c.use_bias)
        self.encoder_proj_layer_norm = RMSNorm(c.hidden_size, c.layer_norm_eps, c.ln_elementwise_affine)
        self.embed = nn.Module()
        self.embed.embeddings = nn.Embedding(c.vocab_size, c.in_channels)
        self.embed.layer_norm = RMSNorm(c.in_channels, c.layer_norm_eps, c.ln_elementwise_affine)
        self.embed.conv = nn.Conv2d(c.in_channels, c.block_out_channels, 1, bias=c.use_bias)
        self.cond_embed = nn.Module()
        self.cond_embed.linear_1 = nn.Linear(c.micro_cond_embed_dim + c.cond_embed_dim, c.hidden_size, c.use_bias)
        self.cond_embed.linear_2 = nn.Linear(c.hidden_size, c.hidden_size, bias=c.use_bias)
        self.down_block = ConvStage(c, downsample=c.downsample, upsample=False)
        self.project_to_hidden_norm = RMSNorm(c.block_out_channels, c.layer_norm_eps, c.ln_elementwise_affine)
        self.project_to_hidden = nn.Linear(c.block_out_channels, c.hidden_size, bias=c.use_bias)
        self.transformer_layers = nn.ModuleList(UVitLayer(c) for _ in range(c.num_hidden_layers))
        self.project_from_hidden_norm = RMSNorm(c.hidden_size, c.layer_norm_eps, c.ln_elementwise_affine)
        self.project_from_hidden = nn.Linear(c.hidden_size, c.block_out_channels, bias=c.use_bias)
        self.up_block = ConvStage(c, downsample=False, upsample=c.upsample)
        self.mlm_layer = nn.Module()
        self.mlm_layer.conv1 = nn.Conv2d(c.block_out_channels, c.in_channels, 1, bias=c.use_bias)
        self.mlm_layer.layer_norm = RMSNorm(c.in_channels, c.layer_norm_eps, c.ln_elementwise_affine)
        self.mlm_layer.conv2 = nn.Conv2d(c.in_channels, c.codebook_size, 1, bias=c.use_bias)

    def condition(self, pooled: torch.Tensor, micro_conds: torch.Tensor) -> torch.Tensor:
        """Pooled text (B, cond_embed_dim) and micro-conditions (B, 5) -> global condition (B, hidden)."""
        micro = timestep_embedding(micro_conds.flatten(), self.config.micro_cond_encode_dim)
        cond = torch.cat([pooled, micro.reshape(pooled.shape[0], -1)], dim=1)
        return self.cond_embed.linear_2(F.silu(self.cond_embed.linear_1(cond)))

    @property
    def cross_attentions(self) -> list[nn.Module]:
        """Every attention that reads the text, in the order of ``ContextCache.keys``."""
        blocks = list(self.down_block.attention_blocks) + list(self.up_block.attention_blocks)
        return [a for block in blocks for a in (block.attn1, block.attn2)] + [
            layer.attn2 for layer in self.transformer_layers
        ]

    @property
    def text_attentions(self) -> list[nn.Module]:
        """The transformer layers' cross-attentions, whose ``to_k``/``to_v`` read ``project_text``'s output (one
        input space, what Perfusion edits). The conv stages' attentions read per-block projections of it."""
        return [layer.attn2 for layer in self.transformer_layers]

    @property
    def text_proj(self) -> nn.Linear:
        """The text projection (aMUSEd's ``encoder_proj``), named as in musekit's own transformers."""
        return self.encoder_proj

    def project_text(self, text) -> tuple[torch.Tensor, torch.Tensor]:
        """Text (B, T, encoder_hidden_size) -> (context (B, T, hidden), mask (B, T) bool): the transformer layers'
        K/V input. aMUSEd attends to every position (CLIP padding included)."""
        if text.hidden_states.shape[-1] != self.config.encoder_hidden_size:
            raise ValueError(
                f"text states have width {text.hidden_states.shape[-1]}, "
                f"the model expects {self.config.encoder_hidden_size}"
            )
        context = self.encoder_proj_layer_norm(self.encoder_proj(text.hidden_states))
        return context, torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)

    image_size: int | None = None  # pixels per side; set by the pipeline loader from the VQ factor (default f16)

    def default_micro_conds(
        self, batch: int, device=None, aesthetic_score: float | None = None, crop_coord: tuple | None = None
    ) -> torch.Tensor:
        """(B, 5) [width, height, crop x, crop y, aesthetic score]; diffusers' defaults: original size = image
        size, crop (0, 0), aesthetic score 6."""
        side = float(self.image_size or self.config.sample_size * 16)
        crop = (0.0, 0.0) if crop_coord is None else tuple(float(c) for c in crop_coord)
        score = 6.0 if aesthetic_score is None else float(aesthetic_score)
        return torch.tensor([[side, side, *crop, score]], device=device).repeat(batch, 1)

    def precompute(self, text, cond_ids=None, key_text=None, micro_conds: torch.Tensor | None = None) -> ContextCache:
        """Project the text once: every text-reading attention's keys/values, and the global condition."""
        if cond_ids is not None:
            raise ValueError("the aMUSEd transformer takes no low-resolution tokens")
        context = self.project_text(text)[0]  # (B, T, hidden)
        key_context = None if key_text is None else self.project_text(key_text)[0]
        batch = context.shape[0]
        if micro_conds is None:
            micro_conds = self.default_micro_conds(batch, context.device)
        keys, values = [], []
        for block in list(self.down_block.attention_blocks) + list(self.up_block.attention_blocks):
            mapped = block.map_context(context)
            mapped_keys = None if key_context is None else block.map_context(key_context)
            for attn in (block.attn1, block.attn2):
                k, v = attn.project_kv(mapped, mapped_keys)
                keys.append(k)
                values.append(v)
        for layer in self.transformer_layers:
            k, v = layer.attn2.project_kv(context, key_context)
            keys.append(k)
            values.append(v)
        mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        return ContextCache(keys, values, mask, token_bias=self.condition(text.pooled, micro_conds))

    def forward(
        self,
        ids: torch.Tensor,
        text=None,
        cond_ids=None,
        cache: ContextCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if cond_ids is not None:
            raise ValueError("the aMUSEd transformer takes no low-resolution tokens")
        """ids (B, H, W) or (B, L) -> logits (B, L, codebook_size); ``cache`` from ``precompute`` (or ``text``).

        ``positions`` (B, M): compute the logits of those tokens only -> (B, M, codebook_size).
        """
        side = self.config.sample_size
        ids = ids.reshape(ids.shape[0], side, side)
        if cache is None:
            if text is None:
                raise ValueError("forward needs `text` or a precomputed `cache`")
            cache = self.precompute(text)
        cond = cache.token_bias  # (B, hidden): the global condition
        kvs = list(zip(cache.keys, cache.values))
        n_down = 2 * len(self.down_block.attention_blocks)
        n_up = 2 * len(self.up_block.attention_blocks)
        x = self.embed.conv(self.embed.layer_norm(self.embed.embeddings(ids)).permute(0, 3, 1, 2))  # (B, C, H, W)
        x = self.down_block(x, cond, kvs[:n_down])
        b, ch, h, w = x.shape
        x = self.project_to_hidden(self.project_to_hidden_norm(x.permute(0, 2, 3, 1).reshape(b, h * w, ch)))
        for layer, kv in zip(self.transformer_layers, kvs[n_down + n_up :]):
            x = layer(x, kv, cond)
        x = self.project_from_hidden(self.project_from_hidden_norm(x))
        x = self.up_block(x.reshape(b, h, w, ch).permute(0, 3, 1, 2), cond, kvs[n_down : n_down + n_up])
        x = self.mlm_layer.layer_norm(self.mlm_layer.conv1(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        if positions is not None:  # the 1x1 conv head as a linear map on the selected tokens only
            x = x.flatten(1, 2).gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, M, C)
            return F.linear(x, self.mlm_layer.conv2.weight.flatten(1), self.mlm_layer.conv2.bias)
        logits = F.conv2d(x.permute(0, 3, 1, 2), self.mlm_layer.conv2.weight, self.mlm_layer.conv2.bias)
        return logits.flatten(2).transpose(1, 2)  # (B, H*W, codebook)


def from_diffusers_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers UVit2DModel keys -> musekit keys (musekit's ``to_out`` is a Linear, not [Linear, Dropout])."""
    return {k.replace(".to_out.0.", ".to_out."): v for k, v in state.items()}


def to_diffusers_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace(".to_out.", ".to_out.0."): v for k, v in state.items()}
