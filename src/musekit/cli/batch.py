"""`--num N` and `--each`, shared by `generate` and the editing commands: N images decoded as one batch, written as
one grid (and with `--each` one file per image too); `--from` an image of a batch makes the batch again and keeps
that image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musekit.cli.common import positive_int

MAX_IMAGES = 64  # decoded as one batch, so memory grows with it


def image_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_IMAGES:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_IMAGES} images in one call (they are decoded as one batch), got {value}; for more, run "
            "again with other seeds"
        )
    return value


def add_batch_arguments(parser, what: str = "images") -> None:
    parser.add_argument("--num", type=image_count, default=None,
                        help=f"number of {what} (written as one grid; default 1, at most {MAX_IMAGES})")  # fmt: skip
    parser.add_argument(
        "--each", action="store_true", help="with --num: also write each image, as PATH-1.png, PATH-2.png, ..."
    )


def batch_index(args: argparse.Namespace, record: dict | None, given_num: int | None) -> int | None:
    """The index of the batch image that ``--from IMAGE`` names, to be made again with its batch (None: the whole
    batch). A different ``--num`` makes different images: say so."""
    if record is None or record.get("index") is None:
        return None
    if given_num is None:
        return record["index"]
    if given_num != record["num"]:
        print(f"musekit: note: {args.from_image} is image {record['index'] + 1} of {record['num']} made "
              f"together; with --num {given_num} the images differ from it (leave out --num to make it "
              "again)", file=sys.stderr)  # fmt: skip
    return None


def note_each(args: argparse.Namespace) -> None:
    if args.each and args.num < 2 and args.index is None:
        print("musekit: note: --each writes the images of --num 2 or more one by one: with one image it adds nothing",
              file=sys.stderr)  # fmt: skip


def write_batch(images, record: dict, path: Path, index: int | None, each: bool):
    """Write one image (``index``, or the only one) or the grid of ``images`` with ``record`` attached to ``path``,
    and with ``each`` every image to ``<path>-1.png`` ...; returns (the image written to ``path``, what was written:
    "N image(s)" or "image k of N", and the files written besides, or "")."""
    from musekit.io.images import make_grid, save_image
    from musekit.io.metadata import attach

    if index is not None and index < len(images):
        image = attach(images[index], record, index=index)
    else:
        image = attach(images[0] if len(images) == 1 else make_grid(images), record)
    save_image(image, path)
    written = [path]
    if each and len(images) > 1:
        for k, single in enumerate(images):
            written.append(save_image(attach(single, record, index=k), path.with_name(f"{path.stem}-{k + 1}.png")))
    count = f"image {index + 1} of {len(images)}" if index is not None else f"{len(images)} image(s)"
    also = f"; each image also as {written[1].name} ... {written[-1].name}" if len(written) > 1 else ""
    return image, count, also
