"""FLOPs of the once-per-call text projection (``precompute``) against the 12-step guided loop, for an aMUSEd config.

python benchmarks/precompute_flops.py --preset amused-256
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from musekit.config import UVitConfig
from musekit.eval.bench_amused import forward_flops
from musekit.models.uvit import UVitTransformer
from musekit.text import TextEmbeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="amused-256")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    config = UVitConfig.preset(args.preset)
    model = UVitTransformer(config).eval()
    for batch in (1, 4):
        states = torch.randn(2 * batch, 77, config.encoder_hidden_size)
        text = TextEmbeddings(states, torch.randn(2 * batch, config.cond_embed_dim), torch.ones(2 * batch, 77).bool())
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            cache = model.precompute(text)
        ids = torch.full((2 * batch, config.sample_size, config.sample_size), config.mask_token_id)
        loop = forward_flops(model, cache, ids) * args.steps
        pre = counter.get_total_flops()
        print(f"batch {batch}: precompute {pre / 1e9:.1f} GFLOP, loop {loop / 1e9:.1f} GFLOP ({100 * pre / loop:.2f}%)")


if __name__ == "__main__":
    main()
