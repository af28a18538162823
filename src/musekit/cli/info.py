"""`musekit info IMAGE`: how a PNG that musekit wrote was made, and the command that makes it again."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show how a musekit PNG was made", description=__doc__)
    p.add_argument("image", nargs="+", help="PNG files written by musekit")
    p.add_argument("--json", action="store_true", help="print each image's settings record as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from musekit.io.metadata import describe, read_record

    records = [(path, read_record(path)) for path in args.image]  # every file checked before anything is printed
    for number, (path, record) in enumerate(records):
        if args.json:
            print(json.dumps(record, indent=None if len(records) > 1 else 2))
            continue
        if number:
            print()
        print(f"{path}:")
        print(describe(record))
    return 0
