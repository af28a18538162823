"""`musekit info FILE...`: how a PNG that musekit wrote was made (and the command that makes it again), or what a
concept file holds and whether the model takes it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show how a musekit PNG was made, or what a concept file holds",
                              description=__doc__)  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help="PNG files or concept files (.safetensors) musekit wrote")
    p.add_argument("--json", action="store_true", help="print each file's record (or concept metadata) as JSON")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="check concept files against this model (default: the bundled model)")  # fmt: skip
    p.add_argument("--no-check", action="store_true", help="do not load a model to check concept files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from musekit.io.metadata import describe, read_record
    from musekit.personalize.concept import Concept

    # every readable file is described; each one that cannot be read gets one error line, and the exit status is 2
    items, failed = [], 0
    for path in args.files:
        try:
            items.append((path, Concept.load(path) if Path(path).suffix == ".safetensors" else read_record(path)))
        except (ValueError, OSError) as err:
            print(f"musekit: error: {str(err).splitlines()[0]}", file=sys.stderr)
            failed += 1
    fingerprint = None
    if not args.no_check and any(isinstance(item, Concept) for _, item in items):
        from musekit.cli.common import load_pipeline
        from musekit.personalize.concept import model_fingerprint

        fingerprint = model_fingerprint(load_pipeline(args.model))
    for number, (path, item) in enumerate(items):
        if args.json:
            data = concept_summary(item, path) if isinstance(item, Concept) else item
            print(json.dumps(data, indent=None if len(items) > 1 else 2))
            continue
        if number:
            print()
        print(f"{path}:")
        print(describe_concept(item, path, fingerprint, args.model) if isinstance(item, Concept) else describe(item))
    return 2 if failed else 0


def concept_summary(concept, path) -> dict:
    """The facts of a concept file, for ``--json``."""
    return {
        "token": concept.token, "superclass": concept.superclass, "method": concept.method,
        "variant": concept.variant, "placeholders": concept.pieces, "train_beta": concept.train_beta,
        "train_tau": concept.train_tau, "fingerprint": concept.fingerprint,
        "layers": {stage: int(v.shape[0]) for stage, v in concept.value_outputs.items()},
        "bytes": Path(path).stat().st_size,
    }  # fmt: skip


def describe_concept(concept, path, fingerprint: str | None, model: str | None) -> str:
    facts = concept_summary(concept, path)
    kind = f"Perfusion, {concept.variant} key-locking" if concept.method == "perfusion" else concept.method
    layers = ", ".join(f"{stage} {count} layers" for stage, count in facts["layers"].items()) or "no layer edits"
    lines = [
        f"concept {concept.token} ({kind})",
        f"  superclass {concept.superclass!r} ({concept.pieces} placeholder(s)); trained at bias {concept.train_beta},"
        f" temperature {concept.train_tau}",
        f"  {layers}; {facts['bytes'] / 1024:.1f} KB; for a model whose text path (the text projection and every "
        f"cross-attention K/V weight) has fingerprint {concept.fingerprint}",
    ]
    if fingerprint is not None:
        where = model or "the bundled model"
        lines.append(f"  works with {where}" if fingerprint == concept.fingerprint else
                     f"  does not work with {where} (its fingerprint {fingerprint}): learn it again there")  # fmt: skip
    lines.append(f"use: musekit generate 'a {concept.token} ...' --concept {path}")
    return "\n".join(lines)
