"""Reduced-precision decoding: fp16/bf16 per-step work, on a GPU replayed as one CUDA graph per step; bf16 also
eagerly on CPUs with native bf16 (AVX512-BF16, AMX), where its products run about 2x fp32.

At batch 1-4 a masked transformer's forward on a GPU is bound by kernel launches more than by arithmetic. Casting the
per-step weights to fp16/bf16 runs the matrix products on tensor cores; capturing the whole forward once and replaying
it as a CUDA graph removes the launches. As in the int8 CPU path (``musekit.models.quantize``) only per-step work
changes: text keys/values (and so Perfusion's edits) are computed once per call by the fp32 model and then cast.
Fidelity against fp32 and speed are measured by ``musekit bench amused --device cuda``.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from musekit.models.layers import ContextCache

logger = logging.getLogger(__name__)

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def cast_cache(cache: ContextCache, dtype: torch.dtype) -> ContextCache:
    """The cache with its floating tensors in ``dtype`` (the attention mask stays bool)."""
    cast = lambda t: t.to(dtype)  # noqa: E731
    bias = None if cache.token_bias is None else cast(cache.token_bias)
    return ContextCache([cast(k) for k in cache.keys], [cast(v) for v in cache.values], cache.mask, bias)


def _cache_tensors(cache: ContextCache) -> list[torch.Tensor]:
    return [*cache.keys, *cache.values, cache.mask] + ([] if cache.token_bias is None else [cache.token_bias])


class _Graph:
    """One captured forward: static ids and cache buffers in, static fp32 logits out."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, cache: ContextCache, warmup: int = 2) -> None:
        self.ids = ids.clone()
        self.cache = ContextCache(
            [k.clone() for k in cache.keys],
            [v.clone() for v in cache.values],
            cache.mask.clone(),
            None if cache.token_bias is None else cache.token_bias.clone(),
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():  # warm-up: lazy initialisation and kernel selection
            for _ in range(warmup):
                model(self.ids, cache=self.cache)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.logits = model(self.ids, cache=self.cache).float()

    def __call__(self, ids: torch.Tensor, cache: ContextCache) -> torch.Tensor:
        self.ids.copy_(ids)
        if cache is not self.cache:
            for static, new in zip(_cache_tensors(self.cache), _cache_tensors(cache)):
                static.copy_(new)
        self.graph.replay()
        return self.logits


class HalfPrecisionModel(nn.Module):
    """A masked transformer whose per-step forward runs in fp16 or bf16, on CUDA as a replayed graph, on a CPU
    eagerly (``cuda_graph`` applies to CUDA inputs only).

    ``precompute`` runs the fp32 model (exact text keys/values) and casts the cache; ``forward`` returns fp32
    logits, so sampling is unchanged. Graphs are captured per (ids shape, cache shapes) and reused across calls
    (new prompts are copied into the captured buffers). ``compile=True`` runs the half model through
    ``torch.compile`` inside the graph: faster steps after a compile of tens of seconds per input shape.
    Inference only.

    Example:
        >>> fast = HalfPrecisionModel(model.cuda(), "fp16")
        >>> cache = fast.precompute(text.to("cuda"))
        >>> logits = fast(ids, cache=cache)  # (B, L, codebook) fp32
    """

    def __init__(self, model: nn.Module, kind: str = "fp16", cuda_graph: bool = True, compile: bool = False) -> None:
        super().__init__()
        if kind not in HALF_DTYPES:
            raise ValueError(f"kind must be one of {tuple(HALF_DTYPES)}, got {kind!r}")
        self.kind = kind
        self.dtype = HALF_DTYPES[kind]
        self.full = model.eval()
        self.fast = copy.deepcopy(model).to(self.dtype).eval()
        if compile:  # fuses the elementwise work; the first call per shape compiles (tens of seconds on a GPU)
            self.fast = torch.compile(self.fast)
        self.config = model.config
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple, _Graph] = {}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the fp32 model's attributes (image_size, default_micro_conds, ...)
            full = self.__dict__.get("_modules", {}).get("full")
            if full is None:
                raise
            return getattr(full, name)

    def precompute(self, *args, **kwargs) -> ContextCache:
        return cast_cache(self.full.precompute(*args, **kwargs), self.dtype)

    def cast(self, cache: ContextCache) -> ContextCache:
        """A cache made by the fp32 model (e.g. with Perfusion's edits), cast for ``forward``."""
        return cast_cache(cache, self.dtype)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, text=None, cond_ids=None, cache=None, positions=None) -> torch.Tensor:
        if cache is None:
            if text is None:
                raise ValueError("forward needs `text` or a precomputed `cache`")
            cache = self.precompute(text, cond_ids)
        if cache.keys and cache.keys[0].dtype != self.dtype:
            cache = self.cast(cache)
        if not (self.cuda_graph and ids.is_cuda):
            return self.fast(ids, cache=cache, positions=positions).float()
        key = (tuple(ids.shape), tuple(tuple(t.shape) for t in _cache_tensors(cache)))
        graph = self._graphs.get(key)
        if graph is None:
            logger.info("capturing a CUDA graph of %s for ids %s", type(self.full).__name__, tuple(ids.shape))
            graph = self._graphs[key] = _Graph(self.fast, ids, cache)
        logits = graph(ids, cache)
        if positions is None:
            return logits.clone()
        return logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
