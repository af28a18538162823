"""Parameter counts of every preset and the CPU time of one decoding step (guided: a batch-2 forward + step).

Usage: python benchmarks/presets.py [--threads 2] [--repeats 5] [--out outputs/bench_presets.jsonl]
Writes one JSON row per preset and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from musekit.config import SUPERRES_PRESETS, TRANSFORMER_PRESETS, VQ_PRESETS
from musekit.models import MaskedTransformer, SuperResTransformer
from musekit.sampling import MaskGITScheduler, apply_guidance
from musekit.text import TextEmbeddings
from musekit.tokenizer import VQModel


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def step_time(model: MaskedTransformer, repeats: int, text_len: int = 32) -> float:
    c = model.config
    gen = torch.Generator().manual_seed(0)
    text = TextEmbeddings(
        torch.randn(2, text_len, c.text_dim, generator=gen),
        torch.randn(2, c.text_dim, generator=gen),
        torch.ones(2, text_len, dtype=torch.bool),
    )
    cond = None
    if isinstance(model, SuperResTransformer):
        cond = torch.randint(0, c.cond_codebook_size, (2, c.cond_grid_size, c.cond_grid_size), generator=gen)
    cache = model.precompute(text, cond)
    ids = torch.full((1, c.seq_len), c.mask_token_id)
    scheduler = MaskGITScheduler(c.mask_token_id)
    scheduler.set_timesteps(12)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            uncond, cond_logits = model(torch.cat([ids, ids]), cache=cache).chunk(2)
            scheduler.step(apply_guidance(uncond, cond_logits, 4.0), scheduler.timesteps[0], ids, generator=gen)
            if i:  # first call is warm-up
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def vq_decode_time(vq: VQModel, grid: int, repeats: int) -> float:
    ids = torch.zeros(1, grid, grid, dtype=torch.long)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        vq.decode(ids)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="outputs/bench_presets.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []

    for name, cfg in TRANSFORMER_PRESETS.items():
        model = MaskedTransformer(cfg).eval()
        rows.append({"component": "transformer", "preset": name, "params": count(model),
                     "tokens": cfg.seq_len, "step_s": step_time(model, args.repeats)})  # fmt: skip
    for name, cfg in SUPERRES_PRESETS.items():
        model = SuperResTransformer(cfg).eval()
        rows.append({"component": "superres", "preset": name, "params": count(model),
                     "tokens": cfg.seq_len, "step_s": step_time(model, args.repeats)})  # fmt: skip
    for name, cfg in VQ_PRESETS.items():
        vq = VQModel(cfg).eval()
        grid = {"tiny": 8, "shapes-f4": 32, "f16": 16}[name]
        rows.append({"component": "vqgan", "preset": name, "params": count(vq), "tokens": grid * grid,
                     "decode_s": vq_decode_time(vq, grid, max(1, args.repeats // 2))})  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "threads": args.threads, "torch": torch.__version__}) + "\n")
    print("| component | preset | parameters | tokens | seconds (step or decode) |")
    print("|---|---|---|---|---|")
    for row in rows:
        seconds = row.get("step_s", row.get("decode_s"))
        print(f"| {row['component']} | {row['preset']} | {row['params']:,} | {row['tokens']} | {seconds:.4f} |")


if __name__ == "__main__":
    main()
