"""`musekit train-tokenizer` and `musekit train --stage base|sr`: the training recipes (HF accelerate).

Single process: `musekit train ...`. Several processes or GPUs: `accelerate launch -m musekit train ...` or
`torchrun --nproc-per-node N -m musekit train ...`. Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musekit.cli.common import CLIError, positive_int
from musekit.io.checkpoint import WEIGHTS_NAME


def _common(p) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, logs, samples, final/)")
    p.add_argument("--config", default=None, metavar="JSON", help="a TrainConfig JSON file (see configs/)")
    p.add_argument("--steps", type=positive_int, default=None, help="override the config's number of steps")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the per-process batch size")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads per process")
    p.add_argument("--stop-after", type=positive_int, default=None, metavar="N",
                   help="train N more steps, checkpoint and exit (rerun to resume)")  # fmt: skip
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start a new run from these weights (an earlier run's final/ folder)")  # fmt: skip


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("train-tokenizer", help="train the VQ tokenizer on shapes renders", description=__doc__)
    _common(p)
    p.set_defaults(func=run_tokenizer)
    p = subparsers.add_parser("train", help="train the base or super-resolution transformer", description=__doc__)
    _common(p)
    p.add_argument("--stage", choices=["base", "sr"], required=True)
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="trained tokenizer folder (…/final)")
    p.add_argument("--shards", default=None, metavar="DIR", help="token shards (encoded on first use)")
    p.add_argument("--mixed-precision", choices=["no", "bf16"], default=None,
                   help="override the config's mixed_precision; bf16 autocast pays on GPUs and "
                   "on CPUs with native bf16 (AVX512-BF16, AMX), and is far slower on other CPUs")  # fmt: skip
    p.set_defaults(func=run_transformer)


def _config(args: argparse.Namespace, stage: str):
    import torch

    from musekit.training.config import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.load(args.config) if args.config else TrainConfig(stage=stage)
    if config.stage != stage:
        raise CLIError(f"{args.config} is a {config.stage!r} config, not {stage!r}")
    overrides = (("steps", args.steps), ("batch_size", args.batch_size), ("init_from", args.init_from),
                 ("mixed_precision", getattr(args, "mixed_precision", None)))  # fmt: skip
    changes = {k: v for k, v in overrides if v is not None}
    if changes.get("init_from") and not (Path(changes["init_from"]) / WEIGHTS_NAME).is_file():
        raise CLIError(f"--init-from: no {WEIGHTS_NAME} in {changes['init_from']}")
    config = config.replace(**changes) if changes else config
    if config.mixed_precision == "bf16" and not torch.cuda.is_available():
        from musekit.models.quantize import bf16_speedup

        if bf16_speedup() < 1:
            print(f"musekit: note: bf16 matrix products run {1 / bf16_speedup():.1f}x slower than fp32 on this CPU "
                  "(no native bf16): mixed precision will slow training here", file=sys.stderr)  # fmt: skip
    return config


def run_tokenizer(args: argparse.Namespace) -> int:
    from musekit.training.tokenizer_loop import train_tokenizer

    final = train_tokenizer(_config(args, "tokenizer"), args.out, stop_after=args.stop_after)
    print(f"wrote {final}" if final else f"checkpointed {args.out}; rerun to resume")
    return 0


def run_transformer(args: argparse.Namespace) -> int:
    from musekit.training.loop import train_transformer

    if not Path(args.tokenizer).is_dir():
        raise CLIError(f"tokenizer folder not found: {args.tokenizer}")
    final = train_transformer(
        _config(args, args.stage), args.out, args.tokenizer, args.shards, stop_after=args.stop_after
    )
    print(f"wrote {final}" if final else f"checkpointed {args.out}; rerun to resume")
    return 0
