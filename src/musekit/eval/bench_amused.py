"""`musekit bench amused`: musekit vs diffusers decoding the same random-weight aMUSEd transformer.

Both stacks get the same weights and prompt embeddings, run the full guided 12-step loop (no text encoder, no VQ
decode) with interleaved repetitions in one process; reports medians, the ratios, and a roofline: model FLOPs per
image divided by time, against this machine's measured fp32 matmul FLOP/s (and int8 linear or bf16 matmul FLOP/s
for those paths). musekit runs its exact fp32 path (same ids as diffusers) and the CPU fast paths that beat fp32 on
this machine (int8 feed-forward, int8 everywhere, bf16: ``fast_paths_here``), whose logits are compared with fp32's
at a fixed half-masked input (cosine, top-1 agreement).
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch

from musekit.config import SchedulerConfig, UVitConfig
from musekit.models.compiled import compile_blocks
from musekit.models.half import HalfPrecisionModel
from musekit.models.quantize import QUANTIZATIONS, Bf16Linear, Int8Linear, logits_fidelity, swap_step_linears
from musekit.models.uvit import UVitTransformer, from_diffusers_state_dict
from musekit.sampling.sampler import decode_tokens
from musekit.text import TextEmbeddings


def _best_rate(run, flop: float, repeats: int, rounds: int) -> float:
    """GFLOP/s of ``run()`` (``flop`` per call): the best of ``rounds`` rounds of ``repeats`` calls after a warm-up
    call. One round straight after building a 600 M-parameter model once read a quarter of the idle rate."""
    run()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        best = min(best, time.perf_counter() - start)
    return flop * repeats / best / 1e9


def matmul_gflops(size: int = 1024, repeats: int = 10, dtype: torch.dtype = torch.float32, rounds: int = 5) -> float:
    """This CPU's size x size matmul rate for ``dtype`` (best of ``rounds``), the roofline's reference."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    return _best_rate(lambda: a @ b, 2 * size**3, repeats, rounds)


def int8_linear_gflops(rows: int = 512, size: int = 1024, repeats: int = 10, rounds: int = 5) -> float:
    """``Int8Linear`` throughput (two size x size layers on a rows x size input; quantization of the activations and
    rescaling of the outputs included), the int8 path's reference rate."""
    from musekit.models.quantize import Int8Linear

    layers = torch.nn.Sequential(Int8Linear(torch.nn.Linear(size, size)), Int8Linear(torch.nn.Linear(size, size)))
    x = torch.randn(rows, size)
    with torch.no_grad():
        return _best_rate(lambda: layers(x), 2 * 2 * rows * size * size, repeats, rounds)


def flops_by_precision(model: torch.nn.Module, cache, ids: torch.Tensor, total: int) -> dict[str, int]:
    """How the ``total`` FLOPs of one forward of ``model`` split by the precision of their products: those of its
    ``Int8Linear`` and ``Bf16Linear`` layers (counted by hooks), the rest fp32 (attention, convolutions, the
    linears left fp32). A ``HalfPrecisionModel`` runs everything in its dtype."""
    if isinstance(model, HalfPrecisionModel):
        return {"fp32": 0, "bf16": total, "int8": 0}
    counts = {"bf16": 0, "int8": 0}

    def count(module, args, out):
        rows = args[0].numel() // module.in_features
        counts["int8" if isinstance(module, Int8Linear) else "bf16"] += (
            2 * rows * module.in_features * module.out_features
        )

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, Int8Linear | Bf16Linear)]
    try:
        with torch.no_grad():
            model(ids, cache=cache)
    finally:
        for handle in handles:
            handle.remove()
    return {"fp32": total - counts["bf16"] - counts["int8"], **counts}


def blended_peak(split: dict[str, int], peaks: dict[str, float]) -> float:
    """The rate (GFLOP/s) at which a forward with FLOPs ``split`` by precision would run if each product ran at its
    precision's reference rate in ``peaks``: the roofline of a mixed-precision path."""
    seconds = sum(flop / 1e9 / peaks[kind] for kind, flop in split.items() if flop)
    return sum(split.values()) / 1e9 / seconds


def forward_flops(model: UVitTransformer, cache, ids: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids, cache=cache)
    return counter.get_total_flops()


def _diffusers_loop(reference, config, batch, steps, guidance, states, pooled, micro, device="cpu"):
    """AmusedPipeline's decoding loop (transformer + AmusedScheduler + guidance), text already encoded."""
    import diffusers

    scheduler = diffusers.AmusedScheduler(mask_token_id=config.mask_token_id)
    scheduler.set_timesteps(steps, device=device)
    grid = config.sample_size
    latents = torch.full((batch, grid, grid), config.mask_token_id, device=device)
    generator = torch.Generator(device).manual_seed(1)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = reference(torch.cat([latents] * 2), micro_conds=micro, pooled_text_emb=pooled,
                            encoder_hidden_states=states)  # fmt: skip
            uncond, cond = out.float().chunk(2)  # fp16 models: guidance and sampling in fp32, as for musekit
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, generator=generator).prev_sample
    return latents


def _forward(model, ids, cache):
    return model(ids, cache=cache)


def _musekit_loop(ours, config, batch, steps, guidance, text, micro, draws="multinomial"):
    """musekit's loop with the aMUSEd scheduler; ``draws="inverse-cdf"`` for the fast paths (see ``run_bench``)."""
    grid = config.sample_size
    with torch.no_grad():
        cache = ours.precompute(text, micro_conds=micro)  # text keys/values once per call
        start = torch.full((batch, grid, grid), config.mask_token_id)
        return decode_tokens(ours, cache, start, steps, SchedulerConfig(kind="amused", draws=draws), guidance,
                             generator=torch.Generator().manual_seed(1))  # fmt: skip


def random_models(preset: str = "amused-256"):
    """(config, diffusers UVit2DModel, musekit UVitTransformer): the same random weights (diffusers' init, seed 0)."""
    import diffusers

    config = UVitConfig.preset(preset)
    torch.manual_seed(0)
    reference = diffusers.UVit2DModel(**config.to_dict()).eval()
    ours = UVitTransformer(config).eval()
    ours.load_state_dict(from_diffusers_state_dict(reference.state_dict()), strict=True)
    return config, reference, ours


# musekit's CPU reduced-precision paths: the MusePipeline.quantize kinds (int8 feed-forward / every per-step linear
# with Int8Linear; bf16 products, Bf16Linear, in every per-step linear but the sensitive ones; the whole per-step
# forward in bf16, HalfPrecisionModel), and two bench-only bf16 scopes (the feed-forward only; every per-step linear)
FAST_PATHS = ("int8", "int8_all", "bf16", "bf16_linears", "bf16_ff", "bf16_all_linears")
LINEAR_PATHS = {kind.replace("-", "_"): scope for kind, scope in QUANTIZATIONS.items()} | {
    "bf16_ff": ("feed-forward", Bf16Linear), "bf16_all_linears": ("all", Bf16Linear)}  # fmt: skip


def fast_paths_here() -> tuple[str, ...]:
    """The CPU fast paths whose products beat fp32 on this machine (the others would take many times as long)."""
    from musekit.models.quantize import bf16_speedup, int8_speedup

    paths = ("int8", "int8_all") if int8_speedup() >= 1 else ()
    return paths + (("bf16", "bf16_linears", "bf16_ff", "bf16_all_linears") if bf16_speedup() >= 1 else ())


def fast_path_model(ours: UVitTransformer, path: str, probe: torch.Tensor, cache) -> torch.nn.Module:
    """``ours`` made ready for one of ``FAST_PATHS`` (the per-step linears found by running ``probe`` with
    ``cache``), or for a linear path's ``"{path}_compiled"`` variant (its blocks compiled,
    ``musekit.models.compiled``); call it like ``ours`` with the same fp32 cache."""
    if path == "bf16":
        return HalfPrecisionModel(ours, "bf16", cuda_graph=False)  # casts an fp32 cache itself
    compiled = path.endswith("_compiled")
    scope, linear = LINEAR_PATHS[path.removesuffix("_compiled")]
    fast = swap_step_linears(ours, partial(_forward, ids=probe, cache=cache), scope, linear)
    if compiled:
        compile_blocks(fast)
    return fast


def bench_inputs(config: UVitConfig, batch: int):
    """The bench's random inputs for ``batch`` images with guidance (2 x batch rows): (text states, pooled text,
    micro-conditioning, the three as ``TextEmbeddings``, a half-masked probe of token ids for the fidelity check)."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(2 * batch, 77, config.encoder_hidden_size, generator=g)
    pooled = torch.randn(2 * batch, config.cond_embed_dim, generator=g)
    side = float(config.sample_size * 16)
    micro = torch.tensor([[side, side, 0.0, 0.0, 6.0]]).repeat(2 * batch, 1)
    text = TextEmbeddings(states, pooled, torch.ones(states.shape[:2], dtype=torch.bool))
    grid = config.sample_size
    probe = torch.randint(0, config.codebook_size, (2 * batch, grid, grid), generator=g)
    probe[torch.rand(probe.shape, generator=g) < 0.5] = config.mask_token_id
    return states, pooled, micro, text, probe


def run_bench(
    preset: str = "amused-256",
    batches=(1, 4),
    steps: int = 12,
    repeats: int = 3,
    guidance: float = 10.0,
    paths: tuple[str, ...] | None = None,
    compile: bool = False,
):
    """One row per batch size. ``paths``: the fast paths to time beside fp32 and diffusers (default: those faster
    than fp32 on this CPU, ``fast_paths_here``; the row lists the ones left out); ``compile``: each linear path
    also with its blocks compiled (``"{path}_compiled"``, compiled before the timed loops).

    musekit's fp32 loop draws tokens with ``torch.multinomial`` as diffusers does (the same ids); the fast paths,
    which cannot give diffusers' ids, draw the same distribution by inverse CDF (``SchedulerConfig.draws``)."""
    paths = fast_paths_here() if paths is None else tuple(paths)
    if unknown := set(paths) - set(FAST_PATHS):
        raise ValueError(f"unknown fast paths {sorted(unknown)}; choose from {FAST_PATHS}")
    if compile:
        paths += tuple(f"{p}_compiled" for p in paths if p in LINEAR_PATHS)
    # a compiled row must not time blocks that fell back to eager past dynamo's recompile limit
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=compile):
        return _bench_rows(preset, batches, steps, repeats, guidance, paths)


def _bench_rows(preset, batches, steps, repeats, guidance, paths) -> list[dict]:
    config, reference, ours = random_models(preset)
    bf16 = any(p.startswith("bf16") for p in paths)
    int8 = bool({"int8", "int8_all"} & set(paths))

    def measure_peaks(old: dict | None = None) -> dict:  # best of this and the previous measurement
        new = {"fp32": matmul_gflops(), "int8": int8_linear_gflops() if int8 else None,
               "bf16": matmul_gflops(dtype=torch.bfloat16) if bf16 else None}  # fmt: skip
        return {k: v if old is None or v is None else max(v, old[k]) for k, v in new.items()}

    peaks = measure_peaks()
    rows = []
    for batch in batches:
        states, pooled, micro, text, probe = bench_inputs(config, batch)
        grid = config.sample_size
        diffusers_loop = partial(_diffusers_loop, reference, config, batch, steps, guidance, states, pooled, micro)
        musekit_loop = partial(_musekit_loop, ours, config, batch, steps, guidance, text, micro)
        same = torch.equal(diffusers_loop(), musekit_loop())
        loops = {"diffusers": diffusers_loop, "musekit": musekit_loop}
        fidelity, fast_models, first_call = {}, {}, {}
        with torch.no_grad():
            cache = ours.precompute(text, micro_conds=micro)
            reference_logits = ours(probe, cache=cache)
            for path in paths:
                fast = fast_models[path] = fast_path_model(ours, path, probe, cache)
                first = time.perf_counter()
                logits = fast(probe, cache=cache)  # a compiled path compiles here, untimed below
                first_call[path] = time.perf_counter() - first
                fidelity[path] = logits_fidelity(reference_logits, logits)
                loops[f"musekit_{path}"] = partial(
                    _musekit_loop, fast, config, batch, steps, guidance, text, micro, draws="inverse-cdf"
                )
        times = {name: [] for name in loops}
        for _ in range(repeats):  # interleaved
            for name, fn in loops.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        peaks = measure_peaks(peaks)  # again after the timed loops, on a warm machine
        peak = peaks["fp32"]
        masked = torch.full((2 * batch, grid, grid), config.mask_token_id)
        with torch.no_grad():
            forward = forward_flops(ours, cache, masked)
        flops = forward * steps
        medians = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "preset": preset, "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "diffusers_s": medians["diffusers"], "musekit_s": medians["musekit"],
            "speedup": medians["diffusers"] / medians["musekit"], "same_ids": same,
            "gflop_per_image": flops / batch / 1e9,
            "musekit_gflops": flops / medians["musekit"] / 1e9, "diffusers_gflops": flops / medians["diffusers"] / 1e9,
            "matmul_peak_gflops": peak, "musekit_fraction_of_peak": flops / medians["musekit"] / 1e9 / peak,
            "skipped_paths": [p for p in FAST_PATHS if p not in paths], "fast_path_draws": "inverse-cdf",
        }  # fmt: skip
        for path in paths:
            seconds = medians[f"musekit_{path}"]
            dtype = "bf16" if path.startswith("bf16") else "int8"
            # a compiled path's split is its eager twin's (the same linears; hooks would not run in compiled blocks)
            split = flops_by_precision(fast_models[path.removesuffix("_compiled")], cache, masked, forward)
            mixed = blended_peak(split, peaks)
            row.update({
                f"musekit_{path}_s": seconds, f"speedup_{path}": medians["diffusers"] / seconds,
                f"{path}_first_forward_s": first_call[path],
                f"{path}_fidelity": fidelity[path], f"musekit_{path}_gflops": flops / seconds / 1e9,
                f"musekit_{path}_fraction_of_{dtype}_peak": flops / seconds / 1e9 / peaks[dtype],
                f"{path}_flop_share": {k: v / forward for k, v in split.items()},
                f"{path}_blended_peak_gflops": mixed,
                f"musekit_{path}_fraction_of_blended_peak": flops / seconds / 1e9 / mixed,
            })  # fmt: skip
        if peaks["int8"] is not None:
            row["int8_linear_peak_gflops"] = peaks["int8"]
        if peaks["bf16"] is not None:
            row["bf16_matmul_peak_gflops"] = peaks["bf16"]
        del fast_models
        rows.append(row)
    return rows


# --- GPU ---------------------------------------------------------------------------------------------------------
def cuda_matmul_tflops(dtype: torch.dtype, size: int = 4096, repeats: int = 20) -> float:
    """This GPU's measured matmul rate for ``dtype`` (fp32 without TF32), the roofline's reference."""
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def _timed_cuda(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _musekit_loop_cuda(model, cache, config, batch, steps, guidance):
    grid = config.sample_size
    start = torch.full((batch, grid, grid), config.mask_token_id, device="cuda")
    return decode_tokens(model, cache, start, steps, SchedulerConfig(kind="amused"), guidance,
                         generator=torch.Generator("cuda").manual_seed(1))  # fmt: skip


def run_bench_cuda(preset: str = "amused-256", batches=(1, 4), steps: int = 12, repeats: int = 5,
                   guidance: float = 10.0, compile: bool = False) -> list[dict]:  # fmt: skip
    """The GPU bench: diffusers fp32 and fp16 against musekit fp32 (exact), fp16 eager, and fp16/bf16 replayed as
    CUDA graphs (``musekit.models.half``; with ``compile``, also torch.compile'd fp16 in the graph); logits fidelity
    of each half path against fp32; roofline per dtype (fp32 without TF32)."""
    import copy

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in both stacks
    torch.backends.cudnn.allow_tf32 = False
    config, reference, ours = random_models(preset)
    reference, ours = reference.cuda(), ours.cuda()
    reference_half = copy.deepcopy(reference).half()
    halves = {kind: HalfPrecisionModel(ours, kind) for kind in ("fp16", "bf16")}
    if compile:
        halves["fp16_compile"] = HalfPrecisionModel(ours, "fp16", compile=True)
    eager16 = HalfPrecisionModel(ours, "fp16", cuda_graph=False)
    peaks = {name: cuda_matmul_tflops(dtype) for name, dtype in
             (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16))}  # fmt: skip
    rows = []
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        states = torch.randn(2 * batch, 77, config.encoder_hidden_size, generator=g).cuda()
        pooled = torch.randn(2 * batch, config.cond_embed_dim, generator=g).cuda()
        side = float(config.sample_size * 16)
        micro = torch.tensor([[side, side, 0.0, 0.0, 6.0]]).repeat(2 * batch, 1).cuda()
        text = TextEmbeddings(states, pooled, torch.ones(states.shape[:2], dtype=torch.bool, device="cuda"))
        args = (config, batch, steps, guidance)
        with torch.no_grad():
            cache = ours.precompute(text, micro_conds=micro)
            half_caches = {kind: model.precompute(text, micro_conds=micro) for kind, model in halves.items()}
            eager_cache = eager16.precompute(text, micro_conds=micro)
        loops = {
            "diffusers_fp32": partial(_diffusers_loop, reference, *args, states, pooled, micro, "cuda"),
            "diffusers_fp16": partial(
                _diffusers_loop, reference_half, *args, states.half(), pooled.half(), micro.half(), "cuda"
            ),  # fmt: skip
            "musekit_fp32": partial(_musekit_loop_cuda, ours, cache, *args),
            "musekit_fp16_eager": partial(_musekit_loop_cuda, eager16, eager_cache, *args),
            "musekit_fp16_graph": partial(_musekit_loop_cuda, halves["fp16"], half_caches["fp16"], *args),
            "musekit_bf16_graph": partial(_musekit_loop_cuda, halves["bf16"], half_caches["bf16"], *args),
        }
        if compile:
            loops["musekit_fp16_compile_graph"] = partial(
                _musekit_loop_cuda, halves["fp16_compile"], half_caches["fp16_compile"], *args
            )
        outputs, errors = {}, {}
        for name, fn in list(loops.items()):  # first runs: warm-up, graph capture, and the ids compared
            try:
                outputs[name] = fn()
            except Exception as err:  # noqa: BLE001 - a path that fails on this machine is reported, not fatal
                errors[name] = f"{type(err).__name__}: {err}"[:300]
                del loops[name]
        same = {
            name: bool(torch.equal(outputs[name].cpu(), outputs["diffusers_fp32"].cpu()))
            for name in outputs
            if name != "diffusers_fp32" and "diffusers_fp32" in outputs
        }
        times = {name: [] for name in loops}
        for _ in range(repeats):  # interleaved
            for name, fn in loops.items():
                times[name].append(_timed_cuda(fn))
        medians = {k: statistics.median(v) for k, v in times.items()}
        grid = config.sample_size
        with torch.no_grad():
            probe = torch.randint(0, config.codebook_size, (2 * batch, grid, grid), generator=g)
            probe[torch.rand(probe.shape, generator=g) < 0.5] = config.mask_token_id
            probe = probe.cuda()
            reference_logits = ours(probe, cache=cache)
            fidelity = {kind: logits_fidelity(reference_logits, model(probe, cache=half_caches[kind]))
                        for kind, model in halves.items()}  # fmt: skip
            diffusers16 = reference_half(probe, micro_conds=micro.half(), pooled_text_emb=pooled.half(),
                                         encoder_hidden_states=states.half())  # fmt: skip
            fidelity["diffusers_fp16"] = logits_fidelity(reference_logits, diffusers16.flatten(2).transpose(1, 2))
            flops = forward_flops(ours, cache, torch.full((2 * batch, grid, grid), config.mask_token_id,
                                                          device="cuda")) * steps  # fmt: skip
        dtype_of = lambda name: name.split("_")[1]  # noqa: E731 - "musekit_fp16_graph" -> "fp16"
        rows.append({
            "device": torch.cuda.get_device_name(), "preset": preset, "batch": batch, "steps": steps,
            "seconds": medians, "errors": errors, "same_ids_as_diffusers_fp32": same,
            "speedup_vs_diffusers_fp32": {k: medians["diffusers_fp32"] / v for k, v in medians.items()}
            if "diffusers_fp32" in medians else {},
            "speedup_vs_diffusers_fp16": {k: medians["diffusers_fp16"] / v for k, v in medians.items()}
            if "diffusers_fp16" in medians else {},
            "fidelity_vs_fp32": fidelity, "gflop_per_image": flops / batch / 1e9,
            "tflops": {k: flops / v / 1e12 for k, v in medians.items()},
            "matmul_peak_tflops": peaks,
            "fraction_of_peak": {k: flops / v / 1e12 / peaks[dtype_of(k)] for k, v in medians.items()},
        })  # fmt: skip
    return rows
