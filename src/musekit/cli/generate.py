"""`musekit generate PROMPT`: text to a PNG (a grid when --num > 1).

The PNG records the prompt and every setting (`musekit info IMAGE` prints them); `musekit generate --from IMAGE`
makes that image again, and flags given beside --from change just those settings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

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
    concept_record,
    fill_from_record,
    load_pipeline,
    non_negative_float,
    note_differences,
    note_prompt,
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
    add_from_argument(p, "the prompt")
    add_sampling_arguments(p, "image")
    p.add_argument(
        "--guidance-schedule", choices=["constant", "linear"], default=None, help="constant or linearly ramped"
    )
    p.add_argument("--choice-temperature", type=non_negative_float, default=None,
                   help="Gumbel choice temperature of the re-masking (annealed to 0)")  # fmt: skip
    add_concept_arguments(p)
    add_batch_arguments(p)
    p.add_argument(
        "--prompts", default=None, metavar="FILE",
        help="a text file of prompts, one a line (# comments): each to PATH-001.png, ... with the same seed",
    )  # fmt: skip
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--out", default="outputs/musekit.png", metavar="PATH",
                   help="output PNG path (default outputs/musekit.png; an existing file is replaced)")  # fmt: skip
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
    """Fill the flags not given from ``--from IMAGE``'s record (returned), then from ``DEFAULTS``."""
    given_num = args.num
    record = fill_from_record(args, "generate", RECORDED)
    args.index = batch_index(args, record, given_num)
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.prompt is None:
        raise CLIError("give a prompt, --prompts FILE, or --from IMAGE to take one from a PNG musekit wrote")
    return record


def read_prompts(path: str) -> list[str]:
    """The prompts of a text file: one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise CLIError(f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CLIError(f"cannot read prompt file {path}: {err}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise CLIError(f"prompt file {path} has no prompts (one a line; # starts a comment)")
    return prompts


def jobs_of(args: argparse.Namespace, out: Path) -> list[tuple[str, Path]]:
    """(prompt, output path) of each image or grid to make: the prompt to ``out``, or with ``--prompts`` each
    line to ``<out>-001.png``, ``<out>-002.png``, ..."""
    if args.prompts is None:
        if not args.prompt.strip():
            raise CLIError("prompt is empty: describe the image you want, e.g. 'a red circle on a blue background'")
        return [(args.prompt, out)]
    prompts = read_prompts(args.prompts)
    digits = max(3, len(str(len(prompts))))
    return [(prompt, out.with_name(f"{out.stem}-{k:0{digits}d}.png")) for k, prompt in enumerate(prompts, 1)]


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from musekit.io.metadata import make_record, sampling_record

    if args.prompts is not None and (args.prompt is not None or args.from_image is not None):
        raise CLIError("give a prompt, --prompts FILE or --from IMAGE, not several")
    if args.prompts is not None:
        args.prompt = ""  # each line is one
    record = settings_from(args)
    out = check_output_path(args.out)
    jobs = jobs_of(args, out)
    note_each(args)
    check_device_arguments(args)  # bad flags fail before the model loads
    pipe = load_pipeline(args.model)
    pipe.progress_bar = not args.quiet and len(jobs) == 1
    place_pipeline(pipe, args)
    settings = dict(
        model=args.model, negative=args.negative, seed=args.seed,
        **sampling_record(pipe, args.steps, args.sr_steps, args.guidance, args.guidance_schedule, args.sr_strength),
        choice_temperature=args.choice_temperature, top_k=args.top_k, num=args.num, **concept_record(args),
    )  # fmt: skip
    note_differences(args.from_image, record, make_record(pipe, "generate", args.prompt, **settings))
    say = print if len(jobs) == 1 else tqdm.write  # a line per file, under the progress bar
    for prompt, path in tqdm(jobs, desc="prompts", disable=args.quiet or len(jobs) == 1):
        note_prompt(pipe, prompt)
        start = time.perf_counter()
        result = pipe(
            prompt,
            negative_prompt=args.negative,
            num_inference_steps=args.steps,
            sr_inference_steps=args.sr_steps,
            guidance_scale=args.guidance,
            guidance_schedule=args.guidance_schedule,
            temperature=args.choice_temperature,
            top_k=args.top_k,
            sr_strength=args.sr_strength,
            num_images_per_prompt=args.num,
            generator=torch.Generator().manual_seed(args.seed),  # each prompt as if made alone: --from re-makes it
            concepts=args.concept or None,
            concept_bias=args.bias,
            concept_temperature=args.temperature,
            key_locking=args.key_locking,
        )
        elapsed = time.perf_counter() - start
        new = make_record(pipe, "generate", prompt, **settings)
        image, count, also = write_batch(result.images, new, path, args.index, args.each)
        say(f"wrote {path} ({image.width}x{image.height}, {count}, seed {args.seed}, {elapsed:.2f} s{also})")
    return 0
