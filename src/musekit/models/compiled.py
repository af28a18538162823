"""torch.compile for the CPU fast paths: each repeated block of a transformer compiled in place.

Inductor fuses the elementwise work between the products (the bf16 casts around ``Bf16Linear``, norms, adaptive
scale and shift, GEGLU, residual adds) into a few C++ loops; the products themselves stay oneDNN's. On the Zen 5
CPU of docs/BENCHMARKS.md this took about 6% off a ``bf16-linears`` forward of the aMUSEd-256 transformer (blocks:
the 22 transformer layers and the convolution stages' blocks). Blocks of one class share one compiled graph (their
weights are the graph's inputs), so a model compiles once per block class and input shape: tens of seconds on 2
cores the first time, then read from inductor's on-disk cache. The exact fp32 path is never compiled: fused
elementwise work rounds differently, and that path must give diffusers' ids.
"""

from __future__ import annotations

import logging
import os
import shutil

from torch import nn

logger = logging.getLogger(__name__)


def block_classes() -> tuple[type[nn.Module], ...]:
    """The repeated per-step blocks of musekit's transformers and of the aMUSEd U-ViT."""
    from musekit.models.layers import TransformerBlock
    from musekit.models.uvit import ConvNextBlock, TextAttentionBlock, UVitLayer

    return (TransformerBlock, UVitLayer, ConvNextBlock, TextAttentionBlock)


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU ($CXX, else g++, c++ or clang++ on PATH), or None."""
    candidates = [os.environ.get("CXX")] if os.environ.get("CXX") else []
    for name in [*candidates, "g++", "c++", "clang++"]:
        if path := shutil.which(name):
            return path
    return None


def require_cpp_compiler() -> None:
    """Raise a clear error where inductor could not build its CPU kernels."""
    if cpp_compiler() is None:
        raise RuntimeError("compiling on a CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX); none found")


def compile_blocks(model: nn.Module) -> int:
    """Compile (in place, ``nn.Module.compile``, static shapes) every block of ``model`` that is one of
    ``block_classes``; returns how many. The state dict keeps its keys. Compilation happens at the first call
    with each new input shape."""
    if model.training:
        raise ValueError("compile_blocks is for inference: call model.eval() first")
    if next(model.parameters()).device.type == "cpu":
        require_cpp_compiler()
    classes = block_classes()
    blocks = [m for m in model.modules() if isinstance(m, classes)]
    for block in blocks:
        block.compile(dynamic=False)
    logger.info("compiled %d blocks of %s (the first call per input shape compiles)", len(blocks), type(model).__name__)
    return len(blocks)
