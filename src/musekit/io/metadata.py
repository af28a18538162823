"""How an image was made, stored in the PNG itself and read back to make it again.

Every PNG that ``musekit generate``, the editing commands and the web UI write carries a text chunk ``musekit``: a
JSON record of the command, the prompt and every setting (for ``generate``, the model's sampling defaults resolved,
so that a later change of defaults does not change what the record means), the model folder and a fingerprint of
all its weights.
``musekit info IMAGE`` prints it with the command line that makes the image again, and ``musekit generate --from
IMAGE`` re-runs it. Editors that rewrite a PNG may drop the chunk; the pixels are never touched.

A record (``SCHEMA`` 1) is a flat JSON object: ``schema``, ``musekit`` (version), ``command`` (``generate``,
``inpaint``, ``outpaint``, ``edit`` or ``img2img``), ``prompt``, then the command's options under their
command-line names (``seed``, ``steps``, ``guidance``, ...; ``null`` for "not set"), ``model`` /
``model_fingerprint``, and ``inputs``: hashes of the input files (image, mask, concept files) it was made from, so a
re-run can say when one has changed. A picture that is one image of a batch also has ``index``. File paths (model,
concepts, inputs) are recorded absolute, so a record re-runs from any folder.
"""

from __future__ import annotations

import hashlib
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
FACTS = ("schema", "musekit", "command", "model_fingerprint", "inputs", "index", "size")
# Options recorded for information that a re-run does not take from the record (they name this machine's setup);
# every command has them as flags.
MACHINE_OPTIONS = ("int8", "device", "half")
PATH_OPTIONS = ("model", "image", "mask")  # recorded absolute; and "concept", a list
SCALARS = (str, int, float, bool, type(None))


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
        "half": precision if precision in ("fp16", "bf16", "bf16-linears") else None,
    }


def weights_fingerprint(pipe) -> str:
    """A short hash of every weight tensor of ``pipe`` (its name, shape and 4,096 of its values spread over it, exact
    bits, so the same weights give the same hash on any machine and thread count), computed once per pipeline,
    at the latest by ``MusePipeline.quantize`` before it changes the weights, so that a quantized pipeline keeps
    the fingerprint of the weights it was loaded with."""
    cached = getattr(pipe, "_weights_fingerprint", None)
    if cached is None:
        digest = hashlib.sha256()
        for name, module in sorted(pipe.modules().items()):
            for key, tensor in module.state_dict().items():
                digest.update(f"{name}.{key}{tuple(tensor.shape)}".encode())
                flat = tensor.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 4096)][:4096]  # exact values, spread over the tensor
                digest.update(sample.float().cpu().numpy().tobytes())
        cached = pipe._weights_fingerprint = digest.hexdigest()[:16]
    return cached


def file_fingerprint(path) -> str:
    """A short hash of a file's bytes (input images, masks and concept files are kilobytes)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def input_fingerprints(record: dict) -> dict:
    """``{"image": hash, "mask": hash, "concept": [hash, ...]}`` of the input files ``record`` names that exist, so
    that a ``--from`` re-run can tell when one has changed since."""
    found = {key: file_fingerprint(record[key]) for key in ("image", "mask") if record.get(key) and
             Path(record[key]).is_file()}  # fmt: skip
    concepts = [file_fingerprint(p) for p in record.get("concept") or [] if Path(p).is_file()]
    if concepts:
        found["concept"] = concepts
    return found


def absolute(path) -> str | None:
    return None if path is None else str(Path(path).resolve())


def make_record(pipe, command: str, prompt: str, model: str | None = None, **options) -> dict:
    """A record of one call of ``command`` (see the module doc): ``options`` under their command-line names, then
    the model and how it runs (``machine_record``). Paths are made absolute."""
    from musekit import __version__

    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; records describe one of {COMMANDS}")
    record = {"schema": SCHEMA, "musekit": __version__, "command": command, "prompt": prompt}
    record.update(options)
    for key in PATH_OPTIONS:
        if key in record:
            record[key] = absolute(record[key])
    if record.get("concept"):
        record["concept"] = [absolute(path) for path in record["concept"]]
    record["model"] = absolute(model)
    record["model_fingerprint"] = weights_fingerprint(pipe)
    inputs = input_fingerprints(record)
    if inputs:
        record["inputs"] = inputs
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
    """The record in the PNG at ``path``, checked; ``ValueError`` (one line) when it cannot be read, has none, or
    holds values no musekit record has."""
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
    problem = record_problem(record)
    if problem:
        raise ValueError(f"{path}: its musekit settings are not a record musekit can read ({problem})")
    if record.get("schema", SCHEMA) > SCHEMA:
        raise ValueError(f"{path} was written by a newer musekit ({record.get('musekit')}): update musekit to read it")
    return record


# Every option a record may hold (the commands' flags, by their names), and the types of the numeric ones.
OPTIONS = ("prompt", "image", "mask", "negative", "seed", "steps", "sr_steps", "guidance", "guidance_schedule",
           "sr_strength", "choice_temperature", "top_k", "num", "concept", "bias", "temperature", "key_locking",
           "model", "pad", "mode", "source_prompt", "iterations", "strength")  # fmt: skip
WHOLE = ("seed", "num", "steps", "sr_steps", "iterations", "top_k", "index", "schema")
NUMBERS = ("guidance", "sr_strength", "choice_temperature", "bias", "temperature", "strength")


def record_problem(record) -> str | None:
    """What makes ``record`` unreadable, or None: an unknown key, a value of the wrong type, an image index outside
    its batch. The values are checked again when a re-run parses them as flags."""
    if not isinstance(record, dict):
        return "not an object"
    if record.get("command") not in COMMANDS:
        return f"unknown command {record.get('command')!r}"
    if not isinstance(record.get("prompt"), str):
        return "no prompt"
    unknown = [key for key in record if key not in (*OPTIONS, *FACTS, *MACHINE_OPTIONS)]
    if unknown:
        return f"unknown setting {unknown[0]!r}"
    for key, value in record.items():
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        if (key in WHOLE and not (whole and value >= 0)) or (
            key in NUMBERS and not (whole or isinstance(value, float))
        ):
            return f"{key} {value!r}"
        if key == "inputs":
            if not isinstance(value, dict):
                return f"{key} {value!r}"
        elif key in ("concept", "pad", "size"):
            kind = str if key == "concept" else int
            if not (isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
                return f"{key} {value!r}"
            if key == "size" and len(value) != 2:
                return f"{key} {value!r}"
        elif not isinstance(value, SCALARS):
            return f"{key} {value!r}"
    index, num = record.get("index"), record.get("num")
    if index is not None and not (isinstance(num, int) and index < num):
        return f"index {index!r} of {num!r} images"
    return None


def command_line(record: dict) -> str:
    """The shell command that makes the image of ``record`` again (inputs that were uploads, not files, are
    written as placeholders in capitals). Flags come first when a positional starts with "-" (then after ``--``)."""
    command = record["command"]
    positionals = []
    for name in POSITIONALS[command]:
        value = record.get(name)
        positionals.append(name.upper() if value is None else str(value))
    flags = []
    for key, value in record.items():
        if key in FACTS or key in POSITIONALS[command] or value is None or value is False or key in MACHINE_OPTIONS:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "concept":
            for path in value:
                flags += [flag, str(path)]
        elif key == "pad":
            flags += [flag, ",".join(map(str, value))]
        elif value is True:
            flags.append(flag)
        elif str(value).startswith("-"):  # "--negative=-h": a value that looks like a flag stays a value
            flags.append(f"{flag}={value}")
        else:
            flags += [flag, str(value)]
    if command == "inpaint" and record.get("mask") is None:
        flags += ["--mask", "MASK"]
    for key in MACHINE_OPTIONS:  # every command takes them
        value = record.get(key)
        if value and not (key == "device" and value == "cpu"):
            flags += [f"--{key}", str(value)]
    if any(p.startswith("-") for p in positionals):
        return shlex.join(["musekit", command, *flags, "--", *positionals])
    return shlex.join(["musekit", command, *positionals, *flags])


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
    facts = f"model: {model} (weights fingerprint {fingerprint}), {machine} on {device}"
    if "size" in record:
        facts += f", {record['size'][0]}x{record['size'][1]}"
    facts += f", musekit {record.get('musekit', '?')}"
    lines = [f"{command}: {record['prompt']}"]
    if inputs:
        lines.append("  " + ", ".join(inputs))
    lines += ["  " + ", ".join(settings), "  " + facts, "again: " + command_line(record)]
    if record.get("index") is not None:
        lines.append(f"(image {record['index'] + 1} of {record.get('num', '?')} made together; "
                     f"`musekit {command} --from` this file makes the batch again and keeps it)")  # fmt: skip
    return "\n".join(lines)
