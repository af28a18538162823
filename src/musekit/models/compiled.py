"""torch.compile for the CPU fast paths: each repeated block of a transformer compiled in place.

Inductor fuses the elementwise work between the products (the bf16 casts around ``Bf16Linear``, norms, adaptive
scale and shift, GEGLU, residual adds) into a few C++ loops; the products themselves stay oneDNN's. On the Zen 5 CPU
of docs/BENCHMARKS.md this took 3-10% off a ``bf16-linears`` decoding loop of the aMUSEd-256 transformer (blocks: the
22 transformer layers and the convolution stages' blocks). Blocks of one class share one compiled graph (their
weights are the graph's inputs), so a model compiles once per block class and input shape (up to
``RECOMPILE_LIMIT`` entries in all; the bench's rows give the first forward's time, compile included), then reads
inductor's on-disk cache. The exact fp32 path is never compiled: fused elementwise work rounds differently, and that
path must give diffusers' ids.
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

CPP_COMPILER_MISSING = "compiling on a CPU needs a C++ compiler (g++ on PATH, or $CXX); none found"
# every module compiled with nn.Module.compile shares one dynamo cache (that of nn.Module._call_impl), 8 entries by
# default: past them blocks run eagerly with one log line. An entry is a block class, input shape and set of linear
# types; base and super-resolution models at a few batch sizes and fast paths need more than 8.
RECOMPILE_LIMIT = 64


def block_classes() -> tuple[type[nn.Module], ...]:
    """The repeated per-step blocks of musekit's transformers and of the aMUSEd U-ViT."""
    from musekit.models.layers import TransformerBlock
    from musekit.models.uvit import ConvNextBlock, TextAttentionBlock, UVitLayer

    return (TransformerBlock, UVitLayer, ConvNextBlock, TextAttentionBlock)


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with (on Linux $CXX as inductor read it, else g++), or
    None where it finds none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler, or a torch without this helper
        return None


def require_cpp_compiler() -> None:
    """Raise a clear error where inductor could not build its CPU kernels."""
    if cpp_compiler() is None:
        raise RuntimeError(CPP_COMPILER_MISSING)


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
        block.compile(dynamic=False, recompile_limit=RECOMPILE_LIMIT)
    logger.info("compiled %d blocks of %s (the first call per input shape compiles)", len(blocks), type(model).__name__)
    return len(blocks)
