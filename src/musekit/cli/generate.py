"""`musekit generate PROMPT`: text to a PNG (a grid when --num > 1)."""

from __future__ import annotations

import argparse
import time

import torch

from musekit.cli.common import (
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
    p.add_argument("prompt", help="what to draw, e.g. 'a large red circle in the center on a blue background'")
    p.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt (what to steer away from)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same image); default 0")
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
        default=DEFAULT_BIAS,
        help="concept gate bias (default %(default)s): lower = more concept, higher = more text",
    )
    p.add_argument("--temperature", type=non_negative_float, default=DEFAULT_TEMPERATURE,
                   help="concept gate temperature")  # fmt: skip
    p.add_argument("--key-locking", choices=["local", "global"], default="local", help="concept key-locking")
    p.add_argument("--num", type=positive_int, default=1, help="number of images (written as one grid)")
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


def run(args: argparse.Namespace) -> int:
    from musekit.io.images import make_grid, save_image

    if not args.prompt.strip():
        raise ValueError("prompt is empty: describe the image you want, e.g. 'a red circle on a blue background'")
    out = check_output_path(args.out)
    check_device_arguments(args)  # bad flags fail before the model loads
    pipe = load_pipeline(args.model)
    pipe.progress_bar = not args.quiet
    place_pipeline(pipe, args)
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
    image = result.images[0] if len(result.images) == 1 else make_grid(result.images)
    save_image(image, out)
    print(f"wrote {out} ({image.width}x{image.height}, {len(result.images)} image(s), {elapsed:.2f} s)")
    return 0
