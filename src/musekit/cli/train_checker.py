"""`musekit train-checker`: train the shapes-world checker and report its accuracy on unseen renders."""

from __future__ import annotations

import argparse
import json

from musekit.cli.common import positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train-checker", help="train the shapes-world checker", description=__doc__)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (config, weights, report.json)")
    p.add_argument("--steps", type=positive_int, default=2500)
    p.add_argument("--batch-size", type=positive_int, default=96)
    p.add_argument("--pool", type=positive_int, default=30000, help="number of pre-rendered training scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from musekit.training.checker import train_checker

    if args.threads:
        torch.set_num_threads(args.threads)
    report = train_checker(args.out, steps=args.steps, batch_size=args.batch_size, pool_size=args.pool, seed=args.seed)
    print(json.dumps(report["accuracy"], indent=2))
    print(f"wrote {args.out} ({report['train_seconds']} s)")
    return 0
