"""`musekit personalize IMAGE... --token "<name>" --superclass WORDS --out FILE`: learn a Perfusion concept.

The superclass is what the concept is (its key is locked to it): a word, or a short phrase when the model reads an
object from several words. The bundled model reads colour and shape from separate words, so give both: "red circle".

Give each image a caption in the model's own words (`--caption`, once per image, `{}` for the concept) when you can:
the edit then learns the object rather than the backgrounds and positions of your images.

    musekit personalize a.png b.png --token "<emblem>" --superclass "red circle" --out emblem.safetensors \\
        --caption "a large {} at the top left on a blue background" \\
        --caption "a small {} in the center on a gray background"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from musekit.cli.common import CLIError, check_writable_folder, load_pipeline, note_words, positive_int, seed_value
from musekit.personalize.trainer import PersonalizeConfig


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("personalize", help="learn a concept from a few images", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("images", nargs="+", metavar="IMAGE", help="4-6 images of the concept work best")
    p.add_argument("--token", required=True, help='the new word, e.g. "<emblem>"')
    p.add_argument("--superclass", required=True, metavar="WORDS",
                   help='what it is: a word or up to 3 (e.g. "red circle"); its key is locked to theirs')  # fmt: skip
    p.add_argument("--out", required=True, metavar="FILE", help="concept file to write (.safetensors)")
    p.add_argument("--caption", action="append", default=None, metavar="TEXT",
                   help='one per image, in order: what the image shows, "{}" for the concept')  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (default {PersonalizeConfig.steps}: about 33 s on 2 CPU cores)")  # fmt: skip
    p.add_argument("--variant", choices=["local", "global", "trained-k"], default="local",
                   help="Perfusion's key-locking: local (default) or global, or trained-k (K learned too)")  # fmt: skip
    p.add_argument("--model", default=None, metavar="DIR",
                   help="the model the concept is for (default: the bundled model)")  # fmt: skip
    p.add_argument("--seed", type=seed_value, default=0, help="training seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from musekit.cli.edit import read_image
    from musekit.personalize.tokens import check_token

    check_token(args.token)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise CLIError(f"concept file must end in .safetensors, got {args.out!r}")
    if out.is_dir():
        raise CLIError(f"output {args.out!r} is a directory")
    check_writable_folder(out.parent, f"cannot write {args.out!r}")  # before a minute of training
    if args.caption is not None:
        if len(args.caption) != len(args.images):
            raise CLIError(f"--caption: give one per image ({len(args.images)} images, {len(args.caption)} captions)")
        missing = [c for c in args.caption if "{}" not in c and args.token not in c]
        if missing:
            raise CLIError(f"--caption {missing[0]!r} does not mark the concept with {{}} or {args.token}")
    images = [read_image(path) for path in args.images]
    pipe = load_pipeline(args.model)
    note_words(pipe, " ".join([args.superclass, *(args.caption or [])]))
    start = time.perf_counter()
    concept = pipe.learn_concept(images, args.token, args.superclass, steps=args.steps, variant=args.variant,
                                 config=PersonalizeConfig(seed=args.seed), captions=args.caption)  # fmt: skip
    seconds = time.perf_counter() - start
    concept.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KB, learned in {seconds:.1f} s, seed {args.seed})")
    return 0
