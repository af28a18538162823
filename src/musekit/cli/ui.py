"""`musekit ui`: the web UI (generate, inpaint, outpaint, edit, personalize) on a local port. Needs gradio:
`pip install 'musekit[ui]'`. Everything runs on this machine; nothing is sent anywhere."""

from __future__ import annotations

import argparse

from musekit.cli.common import (
    CLIError,
    add_device_arguments,
    add_int8_argument,
    check_device_arguments,
    check_writable_folder,
    load_pipeline,
    place_pipeline,
    positive_int,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("ui", help="the web UI in a browser", description=__doc__)
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default %(default)s)")
    p.add_argument("--concept-dir", default="outputs/concepts", metavar="DIR",
                   help="where concepts learned in the UI are written (default %(default)s)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    add_device_arguments(p)
    add_int8_argument(p, "CPU fast path: int8 feed-forward linears (`--int8`) or every per-step linear (`--int8 "
                      "all`); the Personalize tab then cannot learn concepts (it needs full precision)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.port > 65535:
        raise CLIError(f"--port must be at most 65535, got {args.port}")
    try:
        from musekit.ui.app import serve
    except ImportError as err:
        raise CLIError(f"the web UI needs gradio ({err.name} is missing): pip install 'musekit[ui]'") from None
    from musekit.ui.studio import Studio

    check_device_arguments(args)
    concept_dir = check_writable_folder(args.concept_dir, f"cannot write concepts to {args.concept_dir!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = place_pipeline(load_pipeline(args.model), args)
    try:
        serve(Studio(pipe, concept_dir=concept_dir, model=args.model), args.host, args.port)
    except OSError as err:  # e.g. the port is taken
        raise CLIError(f"cannot serve on {args.host}:{args.port} (try another --port): {err}") from None
    return 0
