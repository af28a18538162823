"""`musekit build-pipeline`: assemble trained components into one model folder (e.g. the bundled default)."""

from __future__ import annotations

import argparse
from pathlib import Path

from musekit.cli.common import CLIError, non_negative_float, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("build-pipeline", help="assemble trained components into a model", description=__doc__)
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="DIR",
        help="the tokenizer (of both stages, or of the super-resolution stage with --base-tokenizer)",
    )
    p.add_argument(
        "--base-tokenizer",
        default=None,
        metavar="DIR",
        help="a tokenizer of the base stage's own (e.g. a patch tokenizer); --tokenizer then serves SR",
    )
    p.add_argument("--base", required=True, metavar="DIR")
    p.add_argument("--sr", default=None, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (shipped models)")
    p.add_argument("--captions", default=None, metavar="FILE",
                   help="captions, one per line, for Perfusion's C (default: shapes-world captions)")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=None, help="default base-stage decoding steps")
    p.add_argument("--sr-steps", type=positive_int, default=None, help="default super-resolution decoding steps")
    p.add_argument("--guidance", type=non_negative_float, default=None, help="default base-stage guidance scale")
    p.add_argument("--sr-guidance", type=non_negative_float, default=None,
                   help="default super-resolution guidance scale (1 = no unconditional pass)")  # fmt: skip
    p.add_argument("--sr-strength", type=non_negative_float, default=None,
                   help="default share of SR tokens decoded by the SR transformer (1 = all, as in Muse)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from musekit.config import SuperResConfig, TextEncoderConfig, TransformerConfig, VQConfig
    from musekit.io.checkpoint import load_component
    from musekit.models import MaskedTransformer, SuperResTransformer
    from musekit.pipeline import MusePipeline
    from musekit.text import build_text_encoder
    from musekit.tokenizer import VQModel

    for name in ("tokenizer", "base_tokenizer", "base", "sr"):
        folder = getattr(args, name)
        if folder is not None and not (Path(folder) / "config.json").is_file():
            flag = name.replace("_", "-")
            raise CLIError(f"--{flag} {folder} is not a component folder (config.json missing)")
    if args.base_tokenizer is not None and args.sr is None:
        raise CLIError("--base-tokenizer needs --sr (the other tokenizer serves the super-resolution stage)")
    vq = load_component(VQModel, VQConfig, args.tokenizer)
    vq_sr = None
    if args.base_tokenizer is not None:
        vq, vq_sr = load_component(VQModel, VQConfig, args.base_tokenizer), vq
    base = load_component(MaskedTransformer, TransformerConfig, args.base)
    sr = load_component(SuperResTransformer, SuperResConfig, args.sr) if args.sr else None
    from musekit.config import ConfigError, PipelineConfig

    defaults = {"num_inference_steps": args.steps, "sr_inference_steps": args.sr_steps, "sr_strength": args.sr_strength,
                "guidance_scale": args.guidance, "sr_guidance_scale": args.sr_guidance}  # fmt: skip
    try:
        config = PipelineConfig().replace(**{k: v for k, v in defaults.items() if v is not None})
    except ConfigError as err:
        raise CLIError(str(err)) from None
    try:
        pipe = MusePipeline(build_text_encoder(TextEncoderConfig()), vq, base, sr, vq_sr, config=config)
    except ValueError as err:
        raise CLIError(f"these components do not fit together: {err}") from None
    captions = None
    if args.captions is not None:
        path = Path(args.captions)
        if not path.is_file():
            raise CLIError(f"caption file not found: {path}")
        captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    pipe.world = "shapes"  # musekit's recipes train on the shapes world: its prompt notes apply
    pipe.estimate_covariance(captions)  # Perfusion's C, stored beside the model
    out = pipe.save_pretrained(args.out, dtype=torch.float16 if args.fp16 else None)
    sizes = {k: f"{v:,}" for k, v in pipe.num_parameters().items()}
    print(f"wrote {out} (parameters: {sizes})")
    return 0
