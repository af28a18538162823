"""Entry point of the `musekit` command."""

from __future__ import annotations

import logging
import os
import sys


def build_parser():
    from musekit import __version__
    from musekit.cli import (
        bench,
        build,
        convert,
        edit,
        evaluate,
        generate,
        info,
        personalize,
        shards,
        train,
        train_checker,
        ui,
    )
    from musekit.cli.common import ArgumentParser

    parser = ArgumentParser(prog="musekit", description="Muse-style text-to-image generation and personalization.")
    parser.add_argument("--version", action="version", version=f"musekit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    generate.add_parser(sub)
    edit.add_parsers(sub)
    info.add_parser(sub)
    personalize.add_parser(sub)
    train_checker.add_parser(sub)
    train.add_parsers(sub)
    shards.add_parser(sub)
    build.add_parser(sub)
    convert.add_parser(sub)
    bench.add_parser(sub)
    evaluate.add_parser(sub)
    ui.add_parser(sub)
    return parser


def transformers_without_sklearn() -> None:
    """transformers' generation utilities import scikit-learn when it is installed (it comes with the MiniLM package's
    dependencies): about 0.8 s of a 5-10 s ``make run``, for assisted decoding, which musekit never runs. ``main`` sets
    transformers' own flag for it to False for the rest of the process, so transformers behaves as where scikit-learn
    is not installed (which it supports; the flag itself is private, hence the guard). Processes that use musekit as a
    library, without calling ``main``, are left alone."""
    try:
        from transformers.utils import import_utils
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    if hasattr(import_utils, "_sklearn_available"):
        import_utils._sklearn_available = False


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:  # also while torch and the subcommands are imported
        print("musekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `musekit info ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run(argv: list[str] | None) -> int:
    from musekit.cli.common import CLIError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="musekit: %(message)s")
    transformers_without_sklearn()
    try:
        return args.func(args)
    except BrokenPipeError:
        raise  # an OSError, but not the user's: handled in ``main``
    except (CLIError, ValueError, TypeError, FileNotFoundError, PermissionError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"musekit: error: {message}", file=sys.stderr)
        return 2
