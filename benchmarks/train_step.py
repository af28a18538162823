"""Seconds per training step of base-transformer geometries (random weights and data, the real objective).

Usage: python benchmarks/train_step.py [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from musekit.config import TransformerConfig
from musekit.models.transformer import MaskedTransformer
from musekit.text.base import TextEmbeddings
from musekit.training.objectives import masked_modeling_loss

GEOMETRIES = [(256, 4, 1), (256, 6, 2), (384, 6, 2), (256, 8, 2)]  # (hidden, layers, patch): shapes-small, -patch...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b = args.batch
    for d, layers, patch in GEOMETRIES:
        cfg = TransformerConfig(codebook_size=1024, grid_size=16, hidden_size=d, num_layers=layers, num_heads=4,
                                patch_size=patch)  # fmt: skip
        model = MaskedTransformer(cfg)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 1024, (b, 16, 16), generator=g)
        text = TextEmbeddings(torch.randn(b, 20, 384), torch.randn(b, 384), torch.ones(b, 20, dtype=torch.bool))
        empty = TextEmbeddings(torch.randn(1, 20, 384), torch.randn(1, 384), torch.ones(1, 20, dtype=torch.bool))
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            loss = masked_modeling_loss(model, ids, text, empty, generator=g).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        median = sorted(times)[len(times) // 2]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"hidden {d} layers {layers} patch {patch}: {params:.1f} M params, {median:.3f} s/step, "
              f"{b / median:.0f} samples/s")  # fmt: skip


if __name__ == "__main__":
    main()
