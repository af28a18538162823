"""How an image was made, stored in the PNG itself and read back to make it again.

Every PNG that ``musekit generate``, the editing commands and the web UI write carries a text chunk ``musekit``: a
JSON record of the command, the prompt and every setting (for ``generate``, the model's sampling defaults resolved,
so that a later change of defaults does not change what the record means), the model folder and a fingerprint of
its weights.
``musekit info IMAGE`` prints it with the command line that makes the image again, and ``musekit generate --from
IMAGE`` re-runs it. Editors that rewrite a PNG may drop the chunk; the pixels are never touched.

A record (``SCHEMA`` 1) is a flat JSON object: ``schema``, ``musekit`` (version), ``command`` (``generate``,
``inpaint``, ``outpaint``, ``edit`` or ``img2img``), ``prompt``, then the command's options under their
command-line names (``seed``, ``steps``, ``guidance``, ...; ``null`` for "not set"), and ``model`` /
``model_fingerprint``. A picture that is one image of a batch also has ``index``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from PIL import Image

KEY = "musekit"
SCHEMA = 1
COMMANDS = ("generate", "inpaint", "outpaint", "edit", "img2img")
# Positional arguments of each command, in order (the rest are --flags).
POSITIONALS = {
    "generate": ("prompt",),
    "inpaint": ("image", "prompt"),
    "outpaint": ("image", "prompt"),
    "edit": ("image", "prompt"),
    "img2img": ("image", "prompt"),
}
# Keys that are facts about the image, not options of the command.
FACTS = ("schema", "musekit", "command", "model_fingerprint", "index", "size")
# Options recorded for information that a re-run does not take from the record (they name this machine's setup).
MACHINE_OPTIONS = ("int8", "device", "half")


def sampling_record(pipe, steps=None, sr_steps=None, guidance=None, guidance_schedule=None, sr_strength=None) -> dict:
    """The sampling settings a call ran with: those given, the rest the model's stored defaults."""
    config = pipe.config
    resolved = {
        "steps": steps if steps is not None else config.num_inference_steps,
        "sr_steps": sr_steps if sr_steps is not None else config.sr_inference_steps,
        "guidance": guidance if guidance is not None else config.guidance_scale,
        "guidance_schedule": guidance_schedule or config.guidance_schedule,
    }
    if pipe.superres is None:
        resolved.pop("sr_steps")
    else:
        resolved["sr_strength"] = sr_strength if sr_strength is not None else config.sr_strength
    return resolved


def machine_record(pipe) -> dict:
    """How ``pipe`` runs, as the flags that set it up: ``int8`` ("ff"/"all"), ``device``, ``half``."""
    precision = pipe.precision
    return {
        "int8": {"int8": "ff", "int8-all": "all"}.get(precision),
        "device": str(pipe.device),
        "half": precision if precision in ("fp16", "bf16") else None,
    }


def make_record(pipe, command: str, prompt: str, model: str | None = None, **options) -> dict:
    """A record of one call of ``command`` (see the module doc): ``options`` under their command-line names, then
    the model and how it runs (``machine_record``)."""
    from musekit import __version__
    from musekit.personalize.concept import model_fingerprint

    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; records describe one of {COMMANDS}")
    record = {"schema": SCHEMA, "musekit": __version__, "command": command, "prompt": prompt}
    record.update(options)
    record["model"] = None if model is None else str(model)
    record["model_fingerprint"] = model_fingerprint(pipe)
    record.update(machine_record(pipe))
    return record


def attach(image: Image.Image, record: dict, index: int | None = None) -> Image.Image:
    """Store ``record`` (plus the image's ``index`` in its batch, if given) in ``image.info``, which
    ``musekit.io.images.save_image`` and the web UI write as a PNG text chunk. Returns ``image``."""
    record = dict(record, size=[image.width, image.height])
    if index is not None:
        record["index"] = index
    image.info[KEY] = json.dumps(record)
    return image


def read_record(path: str | Path) -> dict:
    """The record in the PNG at ``path``; ``ValueError`` (one line) when it cannot be read or has none."""
    from musekit.io.images import read_image

    image = read_image(path)
    text = image.info.get(KEY)
    if text is None:
        raise ValueError(
            f"{path} holds no musekit settings (it was not written by musekit, or a program that rewrote it "
            "dropped them)"
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{path}: its musekit settings are not valid JSON") from None
    if not isinstance(record, dict) or record.get("command") not in COMMANDS or "prompt" not in record:
        raise ValueError(f"{path}: its musekit settings are not a record musekit can read")
    if record.get("schema", SCHEMA) > SCHEMA:
        raise ValueError(f"{path} was written by a newer musekit ({record.get('musekit')}): update musekit to read it")
    return record


def command_line(record: dict) -> str:
    """The shell command that makes the image of ``record`` again (inputs that were uploads, not files, are
    written as placeholders in capitals)."""
    command = record["command"]
    words = ["musekit", command]
    for name in POSITIONALS[command]:
        value = record.get(name)
        words.append(name.upper() if value is None else str(value))
    for key, value in record.items():
        if key in FACTS or key in POSITIONALS[command] or value is None or value is False or key in MACHINE_OPTIONS:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "concept":
            for path in value:
                words += [flag, str(path)]
        elif key == "pad":
            words += [flag, ",".join(map(str, value))]
        elif value is True:
            words.append(flag)
        else:
            words += [flag, str(value)]
    for key in MACHINE_OPTIONS:
        value = record.get(key)
        if value and not (key == "device" and value == "cpu"):
            words += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return shlex.join(words)


def describe(record: dict) -> str:
    """A few readable lines: what made the image, with which settings, on which model, and the command that makes
    it again."""
    command = record["command"]
    skip = {"prompt", *FACTS, *MACHINE_OPTIONS, "model"}
    settings = [f"{k} {v if isinstance(v, str | int | float) else json.dumps(v)}" for k, v in record.items()
                if k not in skip and v is not None and k not in POSITIONALS[command]]  # fmt: skip
    inputs = [f"{name} {record[name]}" for name in POSITIONALS[command] if name != "prompt" and record.get(name)]
    machine = ", ".join(f"--{k} {record[k]}" for k in ("int8", "half") if record.get(k)) or "fp32"
    model = record.get("model") or "the bundled model"
    fingerprint, device = record.get("model_fingerprint", "?"), record.get("device", "cpu")
    facts = f"model: {model} (fingerprint {fingerprint}), {machine} on {device}"
    if "size" in record:
        facts += f", {record['size'][0]}x{record['size'][1]}"
    facts += f", musekit {record.get('musekit', '?')}"
    lines = [f"{command}: {record['prompt']}"]
    if inputs:
        lines.append("  " + ", ".join(inputs))
    lines += ["  " + ", ".join(settings), "  " + facts, "again: " + command_line(record)]
    if record.get("index") is not None:
        lines.append(f"(image {record['index'] + 1} of {record.get('num', '?')} made together; "
                     "`musekit generate --from` this file makes it alone)")  # fmt: skip
    return "\n".join(lines)
