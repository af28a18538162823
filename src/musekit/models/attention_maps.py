"""Cross-attention probabilities of a masked transformer, for locating words in the image.

Used by text-only editing (find the tokens a changed word is about) and by personalization (a soft object mask from
the superclass word). The network is unchanged: hooks capture each cross-attention's query input during one forward.
"""

from __future__ import annotations

import math

import torch

from musekit.models.layers import ContextCache
from musekit.models.transformer import MaskedTransformer


@torch.no_grad()
def cross_attention_maps(model: MaskedTransformer, ids: torch.Tensor, cache: ContextCache) -> torch.Tensor:
    """Attention of every image token to every context position, averaged over layers and heads.

    Args:
        model: base or super-resolution transformer.
        ids: (B, h, w) or (B, L) tokens (known or [MASK]).
        cache: precomputed context for the same batch.

    Returns:
        (B, L, S) probabilities (each row sums to 1 over the attendable context positions); with patches, every
        token of a patch gets the patch's row.
    """
    attentions = model.text_attentions  # one resolution: the transformer body's
    index = {id(attn): k for k, attn in enumerate(model.cross_attentions)}  # where each one's keys are cached
    queries: list[torch.Tensor] = []
    handles = [
        attn.register_forward_hook(lambda module, args, kwargs, out: queries.append(args[0]), with_kwargs=True)
        for attn in attentions
    ]
    try:
        with torch.compiler.set_stance("force_eager"):  # hooks added after compiling would not run in compiled blocks
            model(ids, cache=cache)
    finally:
        for handle in handles:
            handle.remove()
    if not queries:
        raise ValueError(f"no text cross-attention of this {type(model).__name__} ran: attention maps need the model "
                         "whose forward runs them (the fp32 one of a half-precision copy)")  # fmt: skip
    total = None
    for attn, x in zip(attentions, queries):
        q = attn._split(attn.to_q(x))  # (B, heads, L', d)
        keys = cache.keys[index[id(attn)]]
        scores = q @ keys.transpose(-1, -2) / math.sqrt(attn.head_dim)  # (B, heads, L', S)
        scores = scores.masked_fill(~cache.mask[:, None, None, :], float("-inf"))
        probs = scores.softmax(-1).mean(1)
        total = probs if total is None else total + probs
    return expand_to_grid(total / len(queries), model.config.grid_size)


def expand_to_grid(rows: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, n*n, S) rows of a coarser body grid (patches, down-sampling) -> (B, grid*grid, S), nearest."""
    b, length, s = rows.shape
    n = math.isqrt(length)
    if n * n != length or grid % n:
        raise ValueError(f"{length} attention rows do not tile a {grid}x{grid} token grid")
    factor = grid // n
    if factor == 1:
        return rows
    rows = rows.view(b, n, n, s).repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    return rows.reshape(b, grid * grid, s)


def word_map(maps: torch.Tensor, positions: list[int], grid: int) -> torch.Tensor:
    """Sum of the maps of context ``positions``, normalised to [0, 1]: (B, L, S) -> (B, grid, grid)."""
    if not positions:
        raise ValueError("no context positions given")
    selected = maps[..., positions].sum(-1)  # (B, L)
    low = selected.amin(1, keepdim=True)
    high = selected.amax(1, keepdim=True)
    return ((selected - low) / (high - low).clamp_min(1e-12)).view(-1, grid, grid)
