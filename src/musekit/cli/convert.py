"""`musekit convert amused SRC DST`: a diffusers aMUSEd folder to musekit's layout (`--to diffusers`: back)."""

from __future__ import annotations

import argparse
from pathlib import Path

from musekit.cli.common import CLIError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert aMUSEd checkpoints", description=__doc__)
    p.add_argument("kind", choices=["amused"])
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--to", choices=["musekit", "diffusers"], default="musekit", help="target layout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from musekit.io.convert_amused import export_amused
    from musekit.pipeline import MusePipeline

    if not Path(args.src).is_dir():
        raise CLIError(f"source folder not found: {args.src}")
    pipe = MusePipeline.from_pretrained(args.src)
    out = export_amused(pipe, args.dst) if args.to == "diffusers" else pipe.save_pretrained(args.dst)
    print(f"wrote {out} ({args.to} layout)")
    return 0
