"""Reduced-precision decoding paths and how far they drift from fp32.

On the 2-core CPU this project targets, fp16/bf16 matmuls are ~100x slower than fp32 while dynamically quantized int8
linears run ~2x faster (docs/BENCHMARKS.md), so the CPU fast path is int8 weights (per output channel) with
per-batch activation scales. It covers the feed-forward linears that run at every decoding step, the bulk of the
FLOPs: measured on the default model, also quantizing the attention projections or the output head dropped the
top-1 agreement with fp32 logits from 99.4% to 97-98% (the target is 99%). Everything that runs once per call (text
projections, cross-attention K/V, which Perfusion edits) stays fp32.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8",)


def step_linears(model: nn.Module, step: Callable[[nn.Module], object]) -> list[str]:
    """Names of the nn.Linear modules that ``step(model)`` (one decoding forward with a precomputed cache) runs.

    The once-per-call work (text projections, cross-attention K/V, the low-resolution encoder) does not run there,
    so it stays fp32: it costs nothing per step, and Perfusion and concept fingerprints read those weights.
    """
    names = {id(m): name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    ran: dict[str, None] = {}
    handles = [
        m.register_forward_hook(lambda module, args, out: ran.setdefault(names[id(module)]))
        for m in model.modules()
        if id(m) in names
    ]
    try:
        with torch.no_grad():
            step(model)
    finally:
        for handle in handles:
            handle.remove()
    return list(ran)


def feed_forward_linears(model: nn.Module, names: list[str]) -> list[str]:
    """The subset of ``names`` that lie inside a feed-forward module (musekit's MLP or aMUSEd's GEGLU)."""
    from musekit.models.layers import FeedForward
    from musekit.models.uvit import GEGLUFeedForward

    blocks = [n for n, m in model.named_modules() if isinstance(m, FeedForward | GEGLUFeedForward)]
    return [n for n in names if any(n.startswith(b + ".") for b in blocks)]


def quantize_int8(model: nn.Module, step: Callable[[nn.Module], object]) -> nn.Module:
    """A copy of ``model`` (eval mode, CPU) whose per-step feed-forward linears (see ``step_linears``) are
    dynamically quantized to int8: weights once, per output channel; activations per batch at run time.
    Inference only (no gradients).
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantization runs on CPU only; on GPU use fp16/bf16 instead")
    names = feed_forward_linears(model, step_linears(model, step))
    fast = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # torch deprecates the quantized tensor API in favour of torchao (not pinned)
        warnings.simplefilter("ignore")
        fast = quantize_dynamic(fast, {name: per_channel_dynamic_qconfig for name in names}, dtype=torch.qint8)
    logger.info("quantized %d linears of %s to int8", len(names), type(model).__name__)
    return fast


def logits_fidelity(reference: torch.Tensor, fast: torch.Tensor) -> dict[str, float]:
    """How close a fast path's logits are to fp32's at the same input: mean cosine similarity of the per-token
    logit vectors, the worst token's cosine, and the share of tokens whose arg-max agrees."""
    reference, fast = reference.float().flatten(0, -2), fast.float().flatten(0, -2)
    cos = torch.nn.functional.cosine_similarity(reference, fast, dim=-1)
    top1 = (reference.argmax(-1) == fast.argmax(-1)).float().mean()
    return {"cosine_mean": cos.mean().item(), "cosine_min": cos.min().item(), "top1_agreement": top1.item()}


def quantize_pipeline(pipe, kind: str = "int8"):
    """``MusePipeline.quantize``: swap ``pipe``'s transformers for int8 copies, keeping the fp32 ones aside."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantize takes one of {QUANTIZATIONS}, got {kind!r}")
    if pipe._full_precision:
        raise ValueError(f"the pipeline is already quantized ({pipe.precision})")
    if pipe.device.type != "cpu":
        raise ValueError("int8 quantization is a CPU path; on GPU cast the pipeline to fp16/bf16 instead")
    text = pipe.text_encoder.empty(1)
    for name in ("transformer", "superres"):
        model = getattr(pipe, name)
        if model is None:
            continue
        cond = None
        if name == "superres":
            side = model.config.cond_grid_size
            cond = torch.zeros(1, side, side, dtype=torch.long)
        with torch.no_grad():
            cache = model.precompute(text, cond)
        side = model.config.grid_size
        ids = torch.full((1, side, side), model.config.mask_token_id, dtype=torch.long)
        pipe._full_precision[name] = model
        setattr(pipe, name, quantize_int8(model, lambda m, ids=ids, cache=cache: m(ids, cache=cache)))
    return pipe
