"""Are torch's int8 and bf16 matrix products faster than fp32 on this CPU? (The CPU fast paths depend on it.)

Usage: python benchmarks/cpu_matmul.py [--threads 2] [--size 1024]
Times fp32 ``a @ b`` against ``torch._int_mm`` (int8 x int8 -> int32, what ``Int8Linear`` runs) and against bf16
``a @ b`` (what ``--half bf16`` runs) on the shapes of the bundled base transformer's per-step linears at batch 1 with
guidance (2 x 64 tokens: 128 rows) and on one square product of ``--size``, best of 3 after a warm-up, and prints the
CPU's capability as torch sees it and ``musekit.models.quantize.int8_speedup()`` / ``bf16_speedup()`` (the checks
``quantize`` makes). (Until 2026-11-26 this was ``benchmarks/int8_matmul.py``, without the bf16 column.)
"""

from __future__ import annotations

import argparse

import torch

from musekit.models.quantize import best_time, bf16_speedup, int8_speedup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s)")  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    n = args.size
    for rows, inner, out in ((128, 320, 1280), (128, 1280, 320), (128, 320, 320), (n, n, n)):
        a, b = torch.randn(rows, inner, generator=generator), torch.randn(inner, out, generator=generator)
        qa = torch.randint(-127, 128, (rows, inner), dtype=torch.int8, generator=generator)
        qb = torch.randint(-127, 128, (inner, out), dtype=torch.int8, generator=generator)
        ha, hb = a.bfloat16(), b.bfloat16()
        fp32 = best_time(lambda a=a, b=b: a @ b)
        int8 = best_time(lambda qa=qa, qb=qb: torch._int_mm(qa, qb))
        bf16 = best_time(lambda ha=ha, hb=hb: ha @ hb)
        rate = 2 * rows * inner * out / 1e9
        print(f"{rows}x{inner} @ {inner}x{out}: fp32 {fp32 * 1e3:.2f} ms ({rate / fp32:.1f} GFLOP/s); int8 "
              f"{int8 * 1e3:.2f} ms ({rate / int8:.1f} GOP/s, {fp32 / int8:.3f}x fp32's speed); bf16 "
              f"{bf16 * 1e3:.2f} ms ({rate / bf16:.1f} GFLOP/s, {fp32 / bf16:.3f}x)")  # fmt: skip
    print(f"int8_speedup() (256x512 @ 512x512): {int8_speedup():.3f}; bf16_speedup(): {bf16_speedup():.3f}")


if __name__ == "__main__":
    main()
