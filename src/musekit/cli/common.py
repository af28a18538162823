"""Helpers shared by the subcommands: one-line errors, output paths, seeded generators, model loading."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from pathlib import Path


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line instead of usage + error; while ``raising_errors`` is on
    (reading arguments that came from a file, not the user) it raises ``CLIError`` instead."""

    raise_errors = False

    def error(self, message: str) -> None:  # type: ignore[override]
        if ArgumentParser.raise_errors:
            raise CLIError(message)
        sys.stderr.write(f"musekit: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


@contextlib.contextmanager
def raising_errors():
    """Parse arguments with errors raised as ``CLIError`` (see ``ArgumentParser``)."""
    before, ArgumentParser.raise_errors = ArgumentParser.raise_errors, True
    try:
        yield
    finally:
        ArgumentParser.raise_errors = before


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


MAX_SEED = 2**63 - 1


def seed_value(text: str) -> int:
    """``--seed``: a whole number from 0 to 2**63 - 1, or ``random`` (drawn here, then recorded and printed)."""
    if text.strip().lower() == "random":
        import secrets

        return secrets.randbelow(2**32)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'random', got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is from 0 to {MAX_SEED} (or 'random'), got {value}")
    return value


def fill_from_record(args: argparse.Namespace, command: str, keys: tuple[str, ...]) -> dict | None:
    """``--from IMAGE``: read the PNG's settings record (which must be ``command``'s), read its command line back
    through musekit's own parser (so its values are checked as typed flags are), and set each of ``keys`` that
    the user did not give. Returns the record, or None without ``--from``."""
    import shlex

    from musekit.cli.main import build_parser
    from musekit.io.metadata import command_line, read_record

    path = args.from_image
    if path is None:
        return None
    record = read_record(path)
    if record["command"] != command:
        raise CLIError(f"{path} was made by `musekit {record['command']}`: re-run it with "
                       f"`musekit {record['command']} --from {path}`")  # fmt: skip
    try:
        with raising_errors():
            recorded = build_parser().parse_args(shlex.split(command_line(record))[1:])
    except (CLIError, SystemExit) as err:  # SystemExit: a flag that prints and exits, should one get through
        raise CLIError(f"{path}: its recorded settings are not valid: {err}") from None
    given_concepts = bool(getattr(args, "concept", None))
    for key in keys:
        if getattr(args, key) in (None, []):
            if key in ("image", "mask") and record.get(key) is None:  # an upload in the web UI: no file to name
                raise CLIError(f"{path} was made from an image uploaded to the web UI: give the {key} file "
                               f"({'--mask MASK' if key == 'mask' else 'the first argument'})")  # fmt: skip
            setattr(args, key, getattr(recorded, key))
            if key in ("image", "mask") and not Path(getattr(args, key)).is_file():
                raise CLIError(f"the {key} {getattr(args, key)} (recorded in {path}) is not there: give it again")
    if not given_concepts:
        missing = [concept for concept in getattr(args, "concept", None) or [] if not Path(concept).is_file()]
        if missing:
            raise CLIError(f"concept file {missing[0]} (recorded in {path}) not found: pass --concept FILE")
    return record


def add_sampling_arguments(parser, result: str) -> None:
    """``--negative``, ``--seed``, ``--steps``, ``--sr-steps``, ``--guidance`` (unset: None, for ``--from``)."""
    parser.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt (what to steer away from)")
    parser.add_argument("--seed", type=seed_value, default=None,
                        help=f"random seed (same seed, same {result}; 'random' draws one); default 0")  # fmt: skip
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="base-stage decoding steps (default: the model's; 16 for the bundled one)")  # fmt: skip
    sr_steps = "super-resolution decoding steps (default: the model's; 4 for the bundled one)"
    parser.add_argument("--sr-steps", type=positive_int, default=None, help=sr_steps)
    guidance = "classifier-free guidance scale, 1 = off (default: the model's; 2 for the bundled one)"
    parser.add_argument("--guidance", type=non_negative_float, default=None, help=guidance)


def differences(old: dict, new: dict) -> str:
    """What a re-run changes beyond the flags the user gave: another model, input file contents, or precision."""
    from musekit.io.metadata import MACHINE_OPTIONS

    notes = []
    if old.get("model_fingerprint") != new["model_fingerprint"]:
        notes.append("another model")
    before, now = old.get("inputs") or {}, new.get("inputs") or {}
    for key, name in (("image", "another image"), ("mask", "another mask"), ("concept", "other concept files")):
        if key in before and key in now and before[key] != now[key]:
            notes.append(f"{name} (a file changed since, or another file given)")
    for key in MACHINE_OPTIONS:
        before, now = old.get(key) or None, new.get(key) or None
        if key == "device":
            before, now = before or "cpu", now or "cpu"
        if before != now:
            flags = [f"--{key} {value}" if value else f"no --{key}" for value in (before, now)]
            notes.append(f"{flags[0]} (this run: {flags[1]})")
    return ", ".join(notes)


def note_differences(path, old: dict | None, new: dict) -> None:
    """Tell the user (stderr) when a ``--from`` re-run uses another model, input file or precision than ``path`` was
    made with."""
    notes = differences(old, new) if old is not None else ""
    if notes:
        print(f"musekit: note: {path} was made with {notes}: the result can differ", file=sys.stderr)


def add_from_argument(parser, what: str) -> None:
    parser.add_argument(
        "--from", dest="from_image", default=None, metavar="IMAGE",
        help=f"take {what} and every setting from a PNG musekit wrote (flags given here override them)",
    )  # fmt: skip


def check_output_path(path: str) -> Path:
    """Fail early (before any work) when the PNG cannot be written."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise CLIError(f"output must be a .png file, got {path!r}")
    if out.exists() and out.is_dir():
        raise CLIError(f"output {path!r} is a directory")
    check_writable_folder(out.parent if str(out.parent) else Path("."), f"cannot write {path!r}")
    return out


def check_writable_folder(folder: str | Path, failure: str) -> Path:
    """Create ``folder`` if needed and check a file can be written there; else CLIError "``failure``: reason"."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise CLIError(f"{failure}: {err.strerror or err}") from None
    return path


def load_pipeline(model: str | None):
    """Load ``--model`` or the bundled default; without either, a random demo model (and say so)."""
    from musekit.pipeline import DEFAULT_MODEL_DIR, MODEL_INDEX, MusePipeline

    if model is not None:
        if not Path(model).exists():
            raise CLIError(f"model folder not found: {model}")
        return MusePipeline.from_pretrained(model)
    if (DEFAULT_MODEL_DIR / MODEL_INDEX).is_file():
        return MusePipeline.from_pretrained()
    print(
        "musekit: note: no trained default model is bundled yet; using a randomly initialised demo model "
        "(the image shows noise, not the prompt). Pass --model DIR to use trained weights.",
        file=sys.stderr,
    )
    return MusePipeline.from_configs(vqgan="shapes-f4", transformer="shapes", superres="shapes", seed=0)


def add_concept_arguments(parser) -> None:
    """``--concept FILE`` (repeat), ``--bias``, ``--temperature``, ``--key-locking``; unset options stay None (the
    library's defaults apply); read them with ``concept_options``."""
    from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE

    parser.add_argument("--concept", action="append", default=[], metavar="FILE",
                        help="a Perfusion concept file whose token the prompt writes (repeat for several)")  # fmt: skip
    bias = f"concept gate bias (default {DEFAULT_BIAS}): lower = more concept, higher = more text"
    parser.add_argument("--bias", type=finite_float, default=None, help=bias)
    parser.add_argument("--temperature", type=positive_float, default=None,
                        help=f"concept gate temperature tau (default {DEFAULT_TEMPERATURE}; the sampler's own "
                        "temperature is --choice-temperature)")  # fmt: skip
    parser.add_argument("--key-locking", choices=["local", "global"], default=None,
                        help="concept key-locking (default local)")  # fmt: skip


def concept_options(args) -> dict:
    """The pipeline keyword arguments of ``add_concept_arguments``' flags (none without ``--concept``)."""
    if not args.concept:
        return {}
    names = {"bias": "concept_bias", "temperature": "concept_temperature", "key_locking": "key_locking"}
    return {
        "concepts": list(args.concept),
        **{names[k]: getattr(args, k) for k in names if getattr(args, k) is not None},
    }


def note_prompt(pipe, prompt: str) -> None:
    """Tell the user (stderr) what a shapes-world model (the bundled one, or one built by musekit's recipes) will make
    of ``prompt`` that they may not expect: words it never saw in training, or no shape named
    (``musekit.data.shapes.prompt_notes``)."""
    if not pipe.is_shapes_world:
        return
    from musekit.data.shapes import prompt_notes

    for note in prompt_notes(prompt):
        print(f"musekit: note: {note}", file=sys.stderr)


def note_words(pipe, text: str) -> None:
    """Tell the user (stderr) which words of ``text`` a shapes-world model never saw in training."""
    if not pipe.is_shapes_world:
        return
    from musekit.data.shapes import unknown_words

    words = unknown_words(text)
    if words:
        print(f"musekit: note: the model never saw {', '.join(repr(w) for w in words)} in training: "
              "a concept learns best with a superclass and captions in its words", file=sys.stderr)  # fmt: skip


def concept_record(args) -> dict:
    """The settings record's concept fields of those flags, the defaults filled in (empty without ``--concept``)."""
    from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE

    if not args.concept:
        return {}
    return {
        "concept": list(args.concept),
        "bias": DEFAULT_BIAS if args.bias is None else args.bias,
        "temperature": DEFAULT_TEMPERATURE if args.temperature is None else args.temperature,
        "key_locking": args.key_locking or "local",
    }


INT8_KINDS = {"ff": "int8", "all": "int8-all"}  # `--int8 [ff|all]` -> MusePipeline.quantize kind


def add_int8_argument(parser, help_text: str) -> None:
    """``--int8`` (feed-forward linears) or ``--int8 all`` (every per-step linear); read it with ``INT8_KINDS``."""
    parser.add_argument("--int8", nargs="?", const="ff", choices=list(INT8_KINDS), default=None, help=help_text)


def add_device_arguments(parser) -> None:
    """``--device`` and ``--half`` (fp16/bf16 on a GPU; bf16 or bf16-linears on a CPU); apply them with
    ``place_pipeline``."""
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--half",
        choices=["fp16", "bf16", "bf16-linears"],
        default=None,
        help="the per-step forward in fp16 or bf16: on a GPU (--device cuda) replayed as a CUDA graph; bf16 also "
        "on CPUs with native bf16 (AVX512-BF16, AMX: products about 2x fp32); bf16-linears (CPU): bf16 products in "
        "all but the few linears that move the logits most, closer to fp32 than bf16 (docs/BENCHMARKS.md)",
    )


def check_device_arguments(args):
    """``--device`` / ``--half`` / ``--int8`` checked before any model is loaded: (device, half, int8)."""
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise CLIError(f"unknown --device {args.device!r}: use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device {args.device!r} is not supported: use cpu or cuda")
    half, int8 = getattr(args, "half", None), getattr(args, "int8", None)
    if half and int8:
        raise CLIError("choose one fast path: --half or --int8")
    if half == "fp16" and device.type != "cuda":
        raise CLIError("--half fp16 is a GPU path: add --device cuda (on a CPU: --half bf16, bf16-linears or --int8)")
    if half == "bf16-linears" and device.type != "cpu":
        raise CLIError("--half bf16-linears is a CPU path: on a GPU use --half fp16 or bf16")
    if int8 and device.type != "cpu":
        raise CLIError("--int8 is a CPU path: on a GPU use --half fp16")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA GPU is available on this machine (torch sees none)")
    return device, half, int8


def place_pipeline(pipe, args):
    """Move ``pipe`` to ``args.device`` and apply ``--half`` / ``--int8`` (checked by ``check_device_arguments``)."""
    device, half, int8 = check_device_arguments(args)
    if int8:
        pipe.quantize(INT8_KINDS[int8])
    pipe.to(device)
    if half:
        pipe.quantize(half)
    return pipe
