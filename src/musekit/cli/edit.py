"""Editing commands: `musekit inpaint`, `outpaint`, `edit`, `img2img` (same style as `generate`)."""

from __future__ import annotations

import argparse
import time

from musekit.cli.batch import add_batch_arguments, batch_index, note_each, write_batch
from musekit.cli.common import (
    CLIError,
    add_concept_arguments,
    add_device_arguments,
    add_from_argument,
    add_int8_argument,
    add_sampling_arguments,
    check_device_arguments,
    check_output_path,
    concept_options,
    concept_record,
    fill_from_record,
    load_pipeline,
    non_negative_float,
    note_differences,
    note_prompt,
    place_pipeline,
    positive_int,
)


def read_image(path: str, what: str = "image"):
    """``musekit.io.images.read_image`` with transparency flattened onto white (masks keep their own mode)."""
    from musekit.io.images import flatten_alpha
    from musekit.io.images import read_image as read

    image = read(path, what)
    return image if what == "mask" else flatten_alpha(image)


def parse_pad(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected L,T,R,B pixel counts, got {text!r}") from None
    if len(values) != 4 or min(values) < 0 or sum(values) == 0:
        raise argparse.ArgumentTypeError(f"expected four non-negative pixel counts L,T,R,B (not all 0), got {text!r}")
    return values  # type: ignore[return-value]


def strength(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"strength must be in [0, 1], got {value}")
    return value


def _common(p, default_out: str) -> None:
    p.add_argument("image", nargs="?", default=None, help="input image file (optional with --from)")
    p.add_argument("prompt", nargs="?", default=None,
                   help="what the result should show (a concept's token puts the concept there)")  # fmt: skip
    add_from_argument(p, "the input, the prompt")
    add_sampling_arguments(p, "result")
    add_concept_arguments(p)
    add_batch_arguments(p, "results (from the same input, different draws)")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument(
        "--out",
        default=default_out,
        metavar="PATH",
        help=f"output PNG path (default {default_out}; an existing file is replaced)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_int8_argument(p, "CPU fast path: int8 feed-forward linears (`--int8`), or every per-step linear (`--int8 all`)")
    add_device_arguments(p)


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("inpaint", help="repaint the white area of a mask", description=__doc__)
    _common(p, "outputs/inpaint.png")
    p.add_argument("--mask", default=None, metavar="MASK",
                   help="grayscale mask of the image's size: white = repaint (required)")  # fmt: skip
    p.set_defaults(func=run, op="inpaint")
    p = subparsers.add_parser("outpaint", help="extend an image beyond its borders", description=__doc__)
    _common(p, "outputs/outpaint.png")
    p.add_argument("--pad", type=parse_pad, default=None, metavar="L,T,R,B",
                   help="pixels to add on each side (required)")  # fmt: skip
    p.add_argument("--mode", choices=("window", "fit"), default=None,
                   help="window (default): at the image's own scale, in model-size windows (sharp; a named object "
                   "may repeat); fit: the whole enlarged image in one pass, scaled to the model")  # fmt: skip
    p.set_defaults(func=run, op="outpaint")
    p = subparsers.add_parser("edit", help="mask-free edit toward a new prompt", description=__doc__)
    _common(p, "outputs/edit.png")
    p.add_argument("--source-prompt", default=None, metavar="TEXT", help="describes the input: confines the edit")
    p.add_argument("--iterations", type=positive_int, default=None, help="resampling rounds (default 100)")
    p.add_argument("--mode", choices=("window", "squash"), default=None,
                   help="for a non-square image: window (default): at the image's own scale, in model-size windows; "
                   "squash: the whole image squeezed into the model's square and stretched back")  # fmt: skip
    p.set_defaults(func=run, op="edit")
    help_text = "redraw an image under a new prompt, keeping its layout"
    p = subparsers.add_parser("img2img", help=help_text, description=__doc__)
    _common(p, "outputs/img2img.png")
    p.add_argument("--strength", type=strength, default=None,
                   help="0 keeps the image, 1 regenerates it fully (required)")  # fmt: skip
    p.add_argument("--mode", choices=("window", "squash"), default=None,
                   help="for a non-square image: window (default): at the image's own scale, in model-size windows; "
                   "squash: the whole image squeezed into the model's square and stretched back")  # fmt: skip
    p.set_defaults(func=run, op="img2img")


# Each command's options that --from takes from a record, the defaults of the optional ones, and the required ones.
SHARED = ("image", "prompt", "negative", "seed", "steps", "sr_steps", "guidance", "concept", "bias", "temperature",
          "key_locking", "model", "num")  # fmt: skip
OWN = {"inpaint": ("mask",), "outpaint": ("pad", "mode"), "edit": ("source_prompt", "iterations", "mode"),
       "img2img": ("strength", "mode")}  # fmt: skip
DEFAULTS = {"seed": 0, "mode": "window", "iterations": 100, "num": 1}
REQUIRED = {"inpaint": ("mask",), "outpaint": ("pad",), "img2img": ("strength",)}


def settings_from(args: argparse.Namespace) -> dict | None:
    """Fill the options not given from ``--from IMAGE``'s record, then the defaults; check the required ones. With
    ``--from``, a lone positional is the new prompt (``musekit img2img --from out.png "a blue circle"``)."""
    if args.from_image is not None and args.image is not None and args.prompt is None:
        args.prompt, args.image = args.image, None
    given_num = args.num
    record = fill_from_record(args, args.op, SHARED + OWN[args.op])
    if record is not None and args.op in ("img2img", "edit") and args.mode is None and "mode" not in record:
        args.mode = "squash"  # made before img2img and edit had windows: how it was made then
    args.index = batch_index(args, record, given_num)
    for key, value in DEFAULTS.items():
        if getattr(args, key, 0) is None:
            setattr(args, key, value)
    if args.image is None or args.prompt is None:
        raise CLIError(f"give an input image and a prompt (or --from IMAGE): musekit {args.op} IMAGE PROMPT ...")
    for key in REQUIRED.get(args.op, ()):
        if getattr(args, key) is None:
            raise CLIError(f"--{key} is required (or --from IMAGE, to take it from a PNG musekit {args.op} wrote)")
    return record


def run(args: argparse.Namespace) -> int:
    import torch

    from musekit.io.metadata import make_record, sampling_record

    previous = settings_from(args)
    if not args.prompt.strip():
        raise CLIError("prompt is empty: describe the result you want")
    out = check_output_path(args.out)
    note_each(args)
    check_device_arguments(args)  # bad flags fail before the model loads
    image = read_image(args.image)
    mask = read_image(args.mask, "mask") if args.op == "inpaint" else None
    pipe = load_pipeline(args.model)
    place_pipeline(pipe, args)
    pipe.progress_bar = not args.quiet
    note_prompt(pipe, args.prompt)
    options = {"mask": args.mask} if args.op == "inpaint" else {}
    if args.op == "outpaint":
        options.update(pad=list(args.pad), mode=args.mode)
    elif args.op == "edit":
        options.update(source_prompt=args.source_prompt, iterations=args.iterations, mode=args.mode)
    elif args.op == "img2img":
        options.update(strength=args.strength, mode=args.mode)
    sampling = sampling_record(pipe, args.steps, args.sr_steps, args.guidance)  # the model's defaults filled in
    record = make_record(
        pipe, args.op, args.prompt, model=args.model, image=args.image, negative=args.negative, seed=args.seed,
        **{key: sampling.get(key) for key in ("steps", "sr_steps", "guidance")}, num=args.num, **options,
        **concept_record(args),
    )  # fmt: skip
    note_differences(args.from_image, previous, record)
    if args.op == "outpaint":  # (the other edits' library calls log it when they resize the input)
        left, top, right, bottom = args.pad
        width, height = (image.width + left + right, image.height + top + bottom) if args.mode == "fit" else image.size
        what = "extended image" if args.mode == "fit" else "input"
        if max(width, height) != pipe.image_size:
            print(f"musekit: note: the {width}x{height} {what} is drawn at {pipe.image_size}px on its longer side")
    common = dict(
        negative_prompt=args.negative, generator=torch.Generator().manual_seed(args.seed),
        num_inference_steps=args.steps, sr_inference_steps=args.sr_steps, num_images_per_prompt=args.num,
        **concept_options(args),
    )  # fmt: skip
    start = time.perf_counter()
    if args.op == "inpaint":
        result = pipe.inpaint(image, mask, args.prompt, guidance_scale=args.guidance, **common)
    elif args.op == "outpaint":
        result = pipe.outpaint(image, args.prompt, pad=args.pad, mode=args.mode, guidance_scale=args.guidance,
                               **common)  # fmt: skip
    elif args.op == "edit":
        result = pipe.edit(image, args.prompt, iterations=args.iterations, source_prompt=args.source_prompt,
                           mode=args.mode, guidance_scale=args.guidance, **common)  # fmt: skip
    else:
        result = pipe.img2img(image, args.prompt, strength=args.strength, mode=args.mode,
                              guidance_scale=args.guidance, **common)  # fmt: skip
    elapsed = time.perf_counter() - start
    picture, count, also = write_batch(result.images, record, out, args.index, args.each)
    print(f"wrote {out} ({picture.width}x{picture.height}, {count}, seed {args.seed}, {elapsed:.2f} s{also})")
    return 0
