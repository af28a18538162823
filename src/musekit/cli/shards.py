"""`musekit encode-shards`: render and tokenize shapes-world examples once (shared by the base and SR stages)."""

from __future__ import annotations

import argparse

from musekit.cli.common import check_device_arguments, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("encode-shards", help="pre-encode training images to token shards", description=__doc__)
    p.add_argument("--tokenizer", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--num", type=positive_int, default=20000, help="number of examples")
    p.add_argument("--image-size", type=positive_int, default=128)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument(
        "--jitter",
        type=float,
        default=1.0,
        help="rendering-noise scale in [0, 1] (0: every scene drawn exactly on its attributes)",
    )
    p.add_argument(
        "--lo-through",
        metavar="DIR",
        default=None,
        help="base-stage tokenizer: tokenize its reconstruction of the low-resolution image (super-resolution "
        "training on what the base stage draws)",
    )
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--workers", type=int, default=0, help="rendering processes (0: render in this process)")
    p.add_argument("--device", default="cpu", help="where the tokenizer runs: cpu (default) or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.jitter <= 1.0:
        raise ValueError(f"--jitter must be in [0, 1], got {args.jitter}")
    import torch

    from musekit.config import VQConfig
    from musekit.data.shapes import ShapesWorld
    from musekit.data.tokens import encode_shards
    from musekit.io.checkpoint import load_component
    from musekit.tokenizer import VQModel

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    device = check_device_arguments(args)[0]
    vq = load_component(VQModel, VQConfig, args.tokenizer).to(device)
    lo_through = load_component(VQModel, VQConfig, args.lo_through).to(device) if args.lo_through else None
    world = ShapesWorld(args.world_seed, jitter=args.jitter)
    out = encode_shards(vq, world, args.out, args.num, args.image_size, lo_through=lo_through, workers=args.workers)
    print(f"wrote {out}")
    return 0
