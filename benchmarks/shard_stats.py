"""How varied a token-shard folder's base grids are: distinct grids, distinct codes per grid, codes used.

Usage: python benchmarks/shard_stats.py runs/shards-base runs/shards-clean [--grids 500]
"""

from __future__ import annotations

import argparse

import torch

from musekit.data.tokens import TokenShards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--grids", type=int, default=500, help="grids for the distinct-codes median")
    args = parser.parse_args()
    for folder in args.shards:
        shards = TokenShards(folder)
        flat = shards.ids_lo.flatten(1)
        per_grid = sorted(int(g.unique().numel()) for g in flat[: args.grids])
        print(f"{folder}: jitter {shards.meta.get('jitter', 1.0)}, {len(flat)} scenes, "
              f"{torch.unique(flat, dim=0).shape[0]} distinct base grids, median {per_grid[len(per_grid) // 2]} "
              f"distinct codes per grid (first {len(per_grid)}), {flat.unique().numel()} codes used")  # fmt: skip


if __name__ == "__main__":
    main()
