"""`musekit generate PROMPT`: text to a PNG (a grid when --num > 1).

The PNG records the prompt and every setting (`musekit info IMAGE` prints them); `musekit generate --from IMAGE`
makes that image again, and flags given beside --from change just those settings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from musekit.cli.common import (
    CLIError,
    add_device_arguments,
    add_int8_argument,
    check_device_arguments,
    check_output_path,
    load_pipeline,
    non_negative_float,
    place_pipeline,
    positive_int,
)
from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="turn a prompt into an image", description=__doc__)
    p.add_argument(
        "prompt", nargs="?", default=None,
        help="what to draw, e.g. 'a large red circle in the center on a blue background' (optional with --from)",
    )  # fmt: skip
    p.add_argument(
        "--from", dest="from_image", default=None, metavar="IMAGE",
        help="take the prompt and settings from a PNG musekit wrote (flags given here override them)",
    )  # fmt: skip
    p.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt (what to steer away from)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same image); default 0")
    p.add_argument("--steps", type=positive_int, default=None, help="base-stage decoding steps")
    p.add_argument("--sr-steps", type=positive_int, default=None, help="super-resolution decoding steps")
    p.add_argument("--guidance", type=non_negative_float, default=None, help="classifier-free guidance scale")
    p.add_argument(
        "--guidance-schedule", choices=["constant", "linear"], default=None, help="constant or linearly ramped"
    )
    p.add_argument("--choice-temperature", type=non_negative_float, default=None,
                   help="Gumbel choice temperature of the re-masking (annealed to 0)")  # fmt: skip
    p.add_argument("--concept", action="append", default=[], metavar="FILE", help="a Perfusion concept file (repeat)")
    p.add_argument(
        "--bias",
        type=float,
        default=None,
        help=f"concept gate bias (default {DEFAULT_BIAS}): lower = more concept, higher = more text",
    )
    p.add_argument("--temperature", type=non_negative_float, default=None,
                   help=f"concept gate temperature (default {DEFAULT_TEMPERATURE})")  # fmt: skip
    p.add_argument("--key-locking", choices=["local", "global"], default=None,
                   help="concept key-locking (default local)")  # fmt: skip
    p.add_argument("--num", type=positive_int, default=None, help="number of images (written as one grid; default 1)")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--out", default="outputs/musekit.png", metavar="PATH", help="output PNG path")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample token values among the k most likely")
    p.add_argument(
        "--sr-strength",
        type=non_negative_float,
        default=None,
        help="share of super-resolution tokens the SR transformer decodes (1 = all; default: the model's)",
    )
    add_int8_argument(
        p,
        "CPU fast path: int8 feed-forward linears (`--int8`), or every per-step linear (`--int8 all`: faster, "
        "further from fp32; see docs/BENCHMARKS.md)",
    )
    add_device_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# What `--from IMAGE` takes from the image's record when the flag is not given, and the defaults of the rest.
RECORDED = ("prompt", "negative", "seed", "steps", "sr_steps", "guidance", "guidance_schedule", "choice_temperature",
            "top_k", "sr_strength", "num", "concept", "bias", "temperature", "key_locking", "model")  # fmt: skip
DEFAULTS = {"seed": 0, "num": 1, "bias": DEFAULT_BIAS, "temperature": DEFAULT_TEMPERATURE, "key_locking": "local"}


def settings_from(args: argparse.Namespace) -> dict | None:
    """Fill the flags not given from ``--from IMAGE``'s record (returned), then from ``DEFAULTS``. The record is
    read back through this command's own parser, so its values are checked as typed flags are."""
    import shlex

    from musekit.cli.main import build_parser
    from musekit.io.metadata import command_line, read_record

    record, args.index = None, None
    if args.from_image is not None:
        record = read_record(args.from_image)
        if record["command"] != "generate":
            raise CLIError(
                f"{args.from_image} was made by `musekit {record['command']}`, which needs its input images: "
                "`musekit info` prints its command line"
            )
        recorded = build_parser().parse_args(shlex.split(command_line(record))[1:])
        if args.num is None and record.get("index") is not None:
            args.index = int(record["index"])  # one image of a batch: make the batch, keep that image
        for key in RECORDED:
            if getattr(args, key) in (None, []):
                setattr(args, key, getattr(recorded, key))
        missing = [path for path in args.concept if not Path(path).is_file()]
        if missing:
            raise CLIError(f"concept file {missing[0]} (recorded in {args.from_image}) not found: pass --concept FILE")
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.prompt is None:
        raise CLIError("give a prompt, or --from IMAGE to take one from a PNG musekit wrote")
    return record


def run(args: argparse.Namespace) -> int:
    from musekit.io.images import make_grid, save_image
    from musekit.io.metadata import attach, make_record, sampling_record

    record = settings_from(args)
    if not args.prompt.strip():
        raise ValueError("prompt is empty: describe the image you want, e.g. 'a red circle on a blue background'")
    out = check_output_path(args.out)
    check_device_arguments(args)  # bad flags fail before the model loads
    pipe = load_pipeline(args.model)
    pipe.progress_bar = not args.quiet
    place_pipeline(pipe, args)
    new = make_record(
        pipe, "generate", args.prompt, model=args.model, negative=args.negative, seed=args.seed,
        **sampling_record(pipe, args.steps, args.sr_steps, args.guidance, args.guidance_schedule, args.sr_strength),
        choice_temperature=args.choice_temperature, top_k=args.top_k, num=args.num, concept=args.concept or None,
        bias=args.bias if args.concept else None, temperature=args.temperature if args.concept else None,
        key_locking=args.key_locking if args.concept else None,
    )  # fmt: skip
    if record is not None:
        notes = differences(record, new)
        if notes:
            print(f"musekit: note: {args.from_image} was made with {notes}: the result can differ")
    start = time.perf_counter()
    result = pipe(
        args.prompt,
        negative_prompt=args.negative,
        num_inference_steps=args.steps,
        sr_inference_steps=args.sr_steps,
        guidance_scale=args.guidance,
        guidance_schedule=args.guidance_schedule,
        temperature=args.choice_temperature,
        top_k=args.top_k,
        sr_strength=args.sr_strength,
        num_images_per_prompt=args.num,
        generator=torch.Generator().manual_seed(args.seed),
        concepts=args.concept or None,
        concept_bias=args.bias,
        concept_temperature=args.temperature,
        key_locking=args.key_locking,
    )
    elapsed = time.perf_counter() - start
    if args.index is not None and args.index < len(result.images):
        image = attach(result.images[args.index], new, index=args.index)
    else:
        image = attach(result.images[0] if len(result.images) == 1 else make_grid(result.images), new)
    save_image(image, out)
    print(f"wrote {out} ({image.width}x{image.height}, {len(result.images)} image(s), {elapsed:.2f} s)")
    return 0


def differences(old: dict, new: dict) -> str:
    """What a re-run changes beyond the flags the user gave: another model, or another precision."""
    from musekit.io.metadata import MACHINE_OPTIONS

    notes = []
    if old.get("model_fingerprint") != new["model_fingerprint"]:
        notes.append("another model")
    for key in MACHINE_OPTIONS:
        before, now = old.get(key) or None, new.get(key) or None
        if key == "device":
            before, now = before or "cpu", now or "cpu"
        if before != now:
            flags = [f"--{key} {value}" if value else f"no --{key}" for value in (before, now)]
            notes.append(f"{flags[0]} (this run: {flags[1]})")
    return ", ".join(notes)
