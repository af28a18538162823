"""`musekit eval shapes|edit|personalize`: measure a model on the shapes world with the checker (a JSON row per run,
and pictures: the shapes grid, the personalization sweep and grid)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from musekit.cli.common import INT8_KINDS, CLIError, add_int8_argument, load_pipeline, positive_int
from musekit.cli.edit import strength
from musekit.personalize.rank_one import DEFAULT_BIAS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model", description=__doc__)
    p.add_argument("suite", choices=["shapes", "edit", "personalize"], help="which evaluation")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--checker", default=None, metavar="DIR", help="checker folder (default: the bundled one)")
    p.add_argument("--num", type=positive_int, default=200, help="prompts per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--sr-steps", type=positive_int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--out-dir", default="outputs/eval", metavar="DIR", help="where the JSON row and grid go")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--concepts", default="bullseye,diamond,crescent", help="personalize: concepts to learn")
    p.add_argument("--concept-steps", type=positive_int, default=60, help="personalize: training steps")
    p.add_argument("--concept-prompts", choices=["captions", "templates"], default="captions",
                   help="personalize: train on per-image captions or on generic templates")  # fmt: skip
    p.add_argument("--samples-per-prompt", type=positive_int, default=2,
                   help="personalize: images per evaluation prompt (different seeds)")  # fmt: skip
    p.add_argument("--two-concept-samples", type=positive_int, default=6,
                   help="personalize: images per two-concept prompt (4 prompts per ordered pair)")  # fmt: skip
    p.add_argument(
        "--betas",
        default="0.5,0.6,0.7,0.8,0.9,1.0",
        metavar="B,B,...",
        help="personalize: the inference gate biases to sweep (comma-separated)",
    )
    p.add_argument("--edit-iterations", type=positive_int, default=30, help="edit: mask-free editing iterations")
    p.add_argument("--img2img-strength", type=strength, default=0.5, help="edit: image-to-image strength (0-1)")
    p.add_argument("--top-k", type=positive_int, default=None, help="shapes: sample among the k most likely codes")
    add_int8_argument(p, "shapes/edit: evaluate the int8 CPU fast path (ff: feed-forward linears; all: every "
                      "per-step linear)")  # fmt: skip
    p.add_argument("--half", choices=["bf16", "bf16-linears"], default=None,
                   help="shapes/edit: evaluate a bf16 CPU fast path (the per-step forward in bf16, or bf16 products "
                   "in all but the sensitive linears)")  # fmt: skip
    p.set_defaults(func=run)


def write_row(args: argparse.Namespace, suite: str, report: dict) -> Path:
    """Append the report (with model and date) as one JSON row to ``OUT_DIR/{suite}.jsonl``; returns OUT_DIR."""
    report["model"] = args.model or "bundled default"
    report["date"] = time.strftime("%Y-%m-%d %H:%M")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{suite}.jsonl").open("a") as handle:
        handle.write(json.dumps(report) + "\n")
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from musekit.eval.checker import load_checker
    from musekit.eval.shapes_eval import EvalSettings, evaluate_shapes
    from musekit.io.images import make_grid, save_image, tensor_to_pil

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checker is not None and not Path(args.checker).is_dir():
        raise CLIError(f"checker folder not found: {args.checker}")
    if args.int8 and args.half:
        raise CLIError("choose one fast path: --half or --int8")
    fast = INT8_KINDS[args.int8] if args.int8 else args.half
    if fast and args.suite == "personalize":
        flag = "--int8" if args.int8 else "--half"
        raise CLIError(f"{flag} applies to `eval shapes` and `eval edit` (concepts are learned in fp32)")
    checker = load_checker(args.checker)
    pipe = load_pipeline(args.model)
    if fast:
        pipe.quantize(fast)
    if args.suite == "personalize":
        return run_personalize(args, pipe, checker)
    if args.suite == "edit":
        return run_edit(args, pipe, checker)
    settings = EvalSettings(args.num, args.seed, 8, args.steps, args.sr_steps, args.guidance, args.top_k)
    report, grid = evaluate_shapes(pipe, checker, settings)
    report["precision"] = pipe.precision
    out = write_row(args, "shapes", report)
    save_image(make_grid(tensor_to_pil(grid), columns=8), out / "shapes-grid.png")
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'shapes.jsonl'} and {out / 'shapes-grid.png'}")
    return 0


def run_personalize(args, pipe, checker) -> int:
    from musekit.data.concepts import CONCEPTS
    from musekit.eval.personalize_eval import (
        GEOMETRIES,
        PersonalizeEvalSettings,
        evaluate_personalization,
        sample_grid,
        sweep_plot,
    )
    from musekit.io.images import make_grid, save_image, tensor_to_pil

    names = tuple(n.strip() for n in args.concepts.split(",") if n.strip())
    unknown = [n for n in names if n not in CONCEPTS]
    if unknown or len(names) < 2:
        raise CLIError(f"--concepts needs at least two of {sorted(CONCEPTS)}, got {args.concepts!r}")
    try:
        betas = tuple(float(b) for b in args.betas.split(","))
    except ValueError:
        raise CLIError(f"--betas takes comma-separated numbers, got {args.betas!r}") from None
    if not betas:
        raise CLIError("--betas needs at least one value")
    default_beta = min(betas, key=lambda b: (round(abs(b - DEFAULT_BIAS), 9), b))  # a tie takes the lower
    settings = PersonalizeEvalSettings(concepts=names, steps=args.concept_steps, baseline_steps=args.concept_steps,
                                       seed=args.seed, betas=betas, default_beta=default_beta,
                                       samples_per_prompt=args.samples_per_prompt,
                                       two_concept_samples=args.two_concept_samples,
                                       captions=args.concept_prompts == "captions")  # fmt: skip
    samples: dict = {}
    report, _ = evaluate_personalization(pipe, checker, settings, samples=samples)
    report["file_bytes_same_layout_fp16"] = {k: 2 * v for k, v in GEOMETRIES.items()}
    out = write_row(args, "personalize", report)
    save_image(sweep_plot(report["summary"]), out / "personalize-sweep.png")
    grid, columns = sample_grid(samples)
    save_image(make_grid(tensor_to_pil(grid), columns=columns), out / "personalize-grid.png")
    print(json.dumps(report["summary"], indent=2))
    print(json.dumps(report["two_concepts"], indent=2))
    print(f"wrote {out / 'personalize.jsonl'}, {out / 'personalize-sweep.png'} and {out / 'personalize-grid.png'}")
    return 0


def run_edit(args, pipe, checker) -> int:
    from musekit.eval.edit_eval import EditEvalSettings, evaluate_editing

    settings = EditEvalSettings(num_cases=args.num, seed=args.seed, iterations=args.edit_iterations,
                                guidance_scale=args.guidance, img2img_strength=args.img2img_strength)  # fmt: skip
    report = evaluate_editing(pipe, checker, settings)
    report["precision"] = pipe.precision
    out = write_row(args, "edit", report)
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'edit.jsonl'}")
    return 0
