"""`musekit bench amused`: musekit vs diffusers on the same random-weight aMUSEd transformer (needs diffusers)."""

from __future__ import annotations

import argparse
import json
import sys

from musekit.cli.common import CLIError, check_device_arguments, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="speed benchmarks", description=__doc__)
    p.add_argument("suite", choices=["amused"])
    p.add_argument("--preset", default="amused-256", help="UVitConfig preset (amused-256, amused-512, tiny)")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--steps", type=positive_int, default=12)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu (int8 and bf16 paths) or cuda (fp16/bf16)")  # fmt: skip
    p.add_argument("--paths", default="auto", metavar="LIST",
                   help="cpu: the fast paths to time beside fp32, comma-separated from int8, int8_all, bf16, "
                   "bf16_linears, bf16_ff, bf16_all_linears, or none; auto (default): those whose products beat fp32 "
                   "here (a slow one takes hours)")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="cuda: also time torch.compile'd fp16; cpu: also time each linear path of --paths (all but "
                   "bf16) with its blocks compiled (needs a C++ compiler; compiles per batch, untimed)")  # fmt: skip
    p.add_argument("--out", default="outputs/bench_amused.jsonl")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util
    from pathlib import Path

    import torch

    if importlib.util.find_spec("diffusers") is None:
        raise CLIError("the benchmark compares against diffusers: pip install 'diffusers==0.33.1'")
    from musekit.eval.bench_amused import run_bench, run_bench_cuda

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        batches = tuple(int(b) for b in args.batch.split(","))
    except ValueError:
        raise CLIError(f"--batch takes comma-separated positive integers, got {args.batch!r}") from None
    if min(batches) < 1:
        raise CLIError(f"--batch takes comma-separated positive integers, got {args.batch!r}")
    if check_device_arguments(args)[0].type == "cuda":
        if args.paths != "auto":
            raise CLIError("--paths chooses the CPU fast paths; on cuda the bench times fp16 and bf16")
        rows = run_bench_cuda(args.preset, batches, args.steps, args.repeats, compile=args.compile)
    else:
        from musekit.eval.bench_amused import FAST_PATHS, fast_paths_here

        if args.paths == "auto":
            paths = fast_paths_here()
            if skipped := [p for p in FAST_PATHS if p not in paths]:
                print(f"musekit: note: not timing {', '.join(skipped)}: slower than fp32 on this CPU (--paths to "
                      "time them anyway)", file=sys.stderr)  # fmt: skip
        else:
            names = [p.strip() for p in args.paths.split(",") if p.strip()]
            paths = () if names == ["none"] else tuple(dict.fromkeys(names))
            if not names or (unknown := [p for p in paths if p not in FAST_PATHS]):
                given = ", ".join(unknown) if names else repr(args.paths)
                raise CLIError(f"--paths: unknown {given}; choose from {', '.join(FAST_PATHS)}, none or auto")
        if args.compile:
            from musekit.eval.bench_amused import LINEAR_PATHS
            from musekit.models.compiled import CPP_COMPILER_MISSING, cpp_compiler

            if not any(p in LINEAR_PATHS for p in paths):
                raise CLIError("--compile on cpu compiles the linear paths: add one of them to --paths "
                               f"({', '.join(LINEAR_PATHS)})")  # fmt: skip
            if cpp_compiler() is None:
                raise CLIError(f"--compile: {CPP_COMPILER_MISSING}")
        rows = run_bench(args.preset, batches, args.steps, args.repeats, paths=paths, compile=args.compile)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            print(json.dumps(row))
    return 0
