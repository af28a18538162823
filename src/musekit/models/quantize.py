"""Reduced-precision decoding paths and how far they drift from fp32.

Which reduced precision pays on a CPU depends on the CPU (docs/BENCHMARKS.md). On the 2-core CPU this project was
first measured on, fp16/bf16 matmuls ran ~100x slower than fp32 while int8 matmuls (``torch._int_mm``, oneDNN) ran
several times faster; on an AVX2-only AMD EPYC torch's int8 product is a plain loop, far slower than fp32; on an
AVX-512 EPYC with native bf16 (AVX512-BF16) both bf16 and int8 beat fp32. ``quantize_pipeline`` measures the path
it is asked for once per process (``int8_speedup``, ``bf16_speedup``) and warns when it is slower than fp32 here.
bf16 on a CPU runs the per-step forward through ``musekit.models.half.HalfPrecisionModel`` (eagerly, no graph);
fp16 is refused on a CPU (no CPU here has fast fp16 products). The int8 path is ``Int8Linear``:
weights int8 per output channel (once), activations int8 per token (at run time), int32 accumulation. Per-token
activation scales keep a token's error independent of the other tokens' outliers; torch's dynamic quantization
(one scale per batch) drifted several times further from fp32 at the same speed.

Scopes of the per-step linears (those a cached decoding forward runs; see ``step_linears``) by ``quantize`` kind:

* ``"int8"``: the feed-forward linears, the bulk of the FLOPs; closest to fp32 of the int8 kinds.
* ``"int8-all"``: every per-step linear (attention projections, patch and output layers too): faster, further.
* ``"bf16-linears"``: ``Bf16Linear`` in every per-step linear but the few whose rounding moves the logits' arg-max
  most (``sensitive_linears``: each self-attention's value and output projections, the projection into the
  residual stream and the logits head, found one group at a time by ``benchmarks/bf16_sensitivity.py``), which stay fp32
  with everything between the linears. On a Zen 5 CPU (bf16 products 4.5x fp32) it is the path that is both over
  twice as fast as diffusers' fp32 and within 1% of fp32's top-1 on random aMUSEd weights (docs/BENCHMARKS.md); on
  the Zen 4 CPU before it (bf16 products about 2.2x fp32) even bf16 in every per-step linear reached only 1.97x.

With ``compile=True`` each transformer block of these copies is compiled (``musekit.models.compiled``): the
elementwise work between the products fused: 3-10% off a ``bf16-linears`` aMUSEd-256 loop on the Zen 5 CPU.

Measured fidelity (logits cosine and top-1 agreement with fp32) is in docs/BENCHMARKS.md; on trained weights the
cosine stays above 0.999 for every scope, while top-1 agreement (97-99.6%) depends on how near-tied the logits are.

Everything that runs once per call (text projections, cross-attention K/V, which Perfusion edits) stays fp32.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)


class Int8Linear(nn.Module):
    """An inference-only int8 copy of an ``nn.Linear``.

    y = (q(x) @ W_q^T) * s_x * s_W + b, with W_q = round(W / s_W) per output channel (s_W = max|W_row| / 127) and
    q(x) = round(x / s_x) per token (s_x = max|x_token| / 127); the product accumulates exactly in int32.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).to(torch.int8))  # (out, in)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features).float()
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        q = torch.round(x / scale).to(torch.int8)  # |x / scale| <= 127 by construction
        y = torch._int_mm(q, self.weight_int8.t()).float()  # the transposed view is the fast layout for oneDNN
        y.mul_(self.weight_scale).mul_(scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Bf16Linear(nn.Module):
    """An inference-only bf16 copy of an ``nn.Linear``: y = float(bf16(x) @ bf16(W)^T) + b. Only the product runs
    in bf16 (fp32 accumulation inside the kernel); the residual stream, norms, attention and everything between the
    linears stay fp32, which keeps it several times closer to fp32 than casting the whole model."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_bf16", linear.weight.detach().to(torch.bfloat16).clone())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x.to(torch.bfloat16), self.weight_bf16).float()
        return y if self.bias is None else y.add_(self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16"


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


# the linear into the transformer's residual stream from the tokens' embedding (aMUSEd U-ViT's ``project_to_hidden``,
# musekit's ``patch_in``) and the logits head (musekit's ``head``; aMUSEd's is a convolution, fp32 anyway); the
# linears out of the stream (``project_from_hidden``, ``patch_out``) run in bf16 (the bundled base's ``patch_out``
# alone flipped 0.1% of the arg-maxes)
STREAM_ENDS = ("project_to_hidden", "patch_in", "head")


def sensitive_linears(model: nn.Module, names: list[str]) -> list[str]:
    """The subset of the per-step linears ``names`` that the ``"most"`` scope keeps in fp32: in every
    self-attention (an ``Attention`` whose keys are computed per step) its value and output projections, the
    projection into the residual stream and the logits head (``STREAM_ENDS``). On random aMUSEd-256 weights each
    of these groups alone in bf16 flipped 0.8% of the arg-maxes, every other group 0-0.4%; on the bundled
    super-resolution transformer the logits head flipped the most, 0.8% (``benchmarks/bf16_sensitivity.py``)."""
    from musekit.models.layers import Attention

    ran = set(names)
    keep = {n for n in names if n in STREAM_ENDS}
    for prefix, module in model.named_modules():
        if isinstance(module, Attention) and f"{prefix}.to_k" in ran:
            keep |= {f"{prefix}.to_v", f"{prefix}.to_out"}
    return [n for n in names if n in keep]


SCOPES = ("feed-forward", "all", "most")


def swap_step_linears(
    model: nn.Module, step: Callable[[nn.Module], object], scope: str = "feed-forward", linear=None
) -> nn.Module:
    """A copy of ``model`` (eval mode, CPU) whose per-step linears (see ``step_linears``) are ``linear(layer)``
    (``Int8Linear`` or ``Bf16Linear``; default ``Int8Linear``): the feed-forward ones (``scope="feed-forward"``),
    all of them (``scope="all"``), or all but the ``sensitive_linears`` (``scope="most"``). Inference only.
    """
    linear = Int8Linear if linear is None else linear
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError(f"the {linear.__name__} path runs on CPU only; on GPU use fp16/bf16 instead")
    names = step_linears(model, step)
    if scope == "feed-forward":
        names = feed_forward_linears(model, names)
    elif scope == "most":
        sensitive = set(sensitive_linears(model, names))
        names = [n for n in names if n not in sensitive]
    fast = copy.deepcopy(model).eval()
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = fast.get_submodule(parent) if parent else fast
        setattr(owner, leaf, linear(getattr(owner, leaf)))
    logger.info("replaced %d linears of %s by %s", len(names), type(model).__name__, linear.__name__)
    return fast


# quantize() kinds that swap per-step linears: kind -> (swap_step_linears scope, linear class)
QUANTIZATIONS = {"int8": ("feed-forward", Int8Linear), "int8-all": ("all", Int8Linear),
                 "bf16-linears": ("most", Bf16Linear)}  # fmt: skip


def logits_fidelity(reference: torch.Tensor, fast: torch.Tensor) -> dict[str, float]:
    """How close a fast path's logits are to fp32's at the same input: mean cosine similarity of the per-token
    logit vectors, the worst token's cosine, and the share of tokens whose arg-max agrees."""
    reference, fast = reference.float().flatten(0, -2), fast.float().flatten(0, -2)
    cos = torch.nn.functional.cosine_similarity(reference, fast, dim=-1)
    top1 = (reference.argmax(-1) == fast.argmax(-1)).float().mean()
    return {"cosine_mean": cos.mean().item(), "cosine_min": cos.min().item(), "top1_agreement": top1.item()}


def best_time(run: Callable[[], object], repeats: int = 3) -> float:
    """The shortest of ``repeats`` timings of ``run()`` in seconds, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@functools.cache
def _product_speedup(kind: str) -> float:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 512, generator=generator), torch.randn(512, 512, generator=generator)
    if kind == "int8":
        qa = torch.randint(-127, 128, (256, 512), dtype=torch.int8, generator=generator)
        qb = torch.randint(-127, 128, (512, 512), dtype=torch.int8, generator=generator)
        return best_time(lambda: a @ b) / best_time(lambda: torch._int_mm(qa, qb))
    ha, hb = a.bfloat16(), b.bfloat16()
    return best_time(lambda: a @ b) / best_time(lambda: ha @ hb)


def int8_speedup() -> float:
    """How many times faster ``torch._int_mm`` multiplies (256 x 512) by (512 x 512) than fp32 does on this CPU, at
    the current thread count (best of 3 each; measured once per process). torch's int8 product is fast on some CPUs
    and a plain loop on others: on an AVX2-only AMD EPYC it ran 24-55x slower than fp32 (docs/BENCHMARKS.md)."""
    return _product_speedup("int8")


def bf16_speedup() -> float:
    """How many times faster bf16 multiplies (256 x 512) by (512 x 512) than fp32 does on this CPU, at the current
    thread count (best of 3 each; measured once per process): about 2x with native bf16 (AVX512-BF16, AMX), about
    1/100 without it (docs/BENCHMARKS.md)."""
    return _product_speedup("bf16")


def quantize_pipeline(pipe, kind: str = "int8", compile: bool = False):
    """``MusePipeline.quantize``: swap ``pipe``'s transformers for int8 or bf16-linears (CPU), bf16 (CPU or CUDA)
    or fp16 (CUDA) copies, keeping the fp32 ones aside. ``compile``: torch.compile the half-precision forward on
    CUDA, or each block of the int8/bf16-linears copies on a CPU (``musekit.models.compiled``)."""
    from musekit.models.compiled import compile_blocks, require_cpp_compiler
    from musekit.models.half import HALF_DTYPES, HalfPrecisionModel

    if kind not in QUANTIZATIONS and kind not in HALF_DTYPES:
        raise ValueError(f"quantize takes one of {(*QUANTIZATIONS, *HALF_DTYPES)}, got {kind!r}")
    if pipe._full_precision:
        raise ValueError(f"the pipeline is already quantized ({pipe.precision})")
    if kind in HALF_DTYPES:
        if pipe.device.type != "cuda":
            if kind == "fp16":
                raise ValueError("fp16 is a GPU path (on a CPU fp16 matrix products run about 100x slower than "
                                 "fp32): move the pipeline to CUDA first, or use bf16 or int8 on a CPU")  # fmt: skip
            if compile:
                raise ValueError("on a CPU, compile applies to the int8 and bf16-linears paths (bf16 runs eagerly)")
            speedup = bf16_speedup()
            if speedup < 1:
                logger.warning("on this CPU (%s) bf16 matrix products run %.1fx slower than fp32 (no native bf16): "
                               "bf16 will be slower than fp32 here",
                               torch.backends.cpu.get_cpu_capability(), 1 / speedup)  # fmt: skip
        made = {name: HalfPrecisionModel(model, kind, compile=compile) for name, model in _transformers(pipe)}
        return _install(pipe, kind, made)
    scope, linear = QUANTIZATIONS[kind]
    product = "int8" if linear is Int8Linear else "bf16"
    if pipe.device.type != "cpu":
        raise ValueError(f"{kind} is a CPU path; on GPU cast the pipeline to fp16/bf16 instead")
    if compile:
        require_cpp_compiler()
    speedup = int8_speedup() if product == "int8" else bf16_speedup()
    if speedup < 1:
        logger.warning("on this CPU (%s) %s matrix products run %.1fx slower than fp32 (torch has no fast %s "
                       "kernel for it): %s will be slower than fp32 here",
                       torch.backends.cpu.get_cpu_capability(), product, 1 / speedup, product, kind)  # fmt: skip
    text = pipe.text_encoder.empty(1)
    made = {}  # every copy is made before the pipeline changes, so an error leaves it as it was
    for name, model in _transformers(pipe):
        cond = None
        if name == "superres":
            side = model.config.cond_grid_size
            cond = torch.zeros(1, side, side, dtype=torch.long)
        with torch.no_grad():
            cache = model.precompute(text, cond)
        side = model.config.grid_size
        ids = torch.full((1, side, side), model.config.mask_token_id, dtype=torch.long)
        step = lambda m, ids=ids, cache=cache: m(ids, cache=cache)  # noqa: E731
        made[name] = swap_step_linears(model, step, scope, linear)
        if compile:
            compile_blocks(made[name])
    return _install(pipe, kind, made)


def _transformers(pipe) -> list[tuple[str, nn.Module]]:
    return [(name, getattr(pipe, name)) for name in ("transformer", "superres") if getattr(pipe, name) is not None]


def _install(pipe, kind: str, made: dict[str, nn.Module]):
    """Put the quantized copies ``made`` in place of ``pipe``'s transformers, keeping the fp32 ones aside."""
    for name, fast in made.items():
        pipe._full_precision[name] = getattr(pipe, name)
        setattr(pipe, name, fast)
    pipe._quantization = kind
    return pipe
