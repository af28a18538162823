"""What the web UI does, without the UI: generation, editing and personalization on one loaded pipeline.

Every method checks its inputs and raises ``ValueError`` with a one-line message (the UI shows it as an error
message; the pipeline's own checks, e.g. of concept options, pass through the same way), takes a seed (same seed,
same result) and returns PIL images plus a one-line summary. Nothing here imports gradio, so it is tested like the
rest of the library.
"""

from __future__ import annotations

import numbers
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from musekit.data.shapes import prompt_notes
from musekit.editing.outpaint import OUTPAINT_MODES
from musekit.io.images import check_image_size, flatten_alpha, read_image
from musekit.io.metadata import attach, make_record, sampling_record
from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE

MAX_IMAGES = 8  # images per generate call
MAX_CONCEPT_IMAGES = 10
MAX_SEED = 2**63 - 1
MAX_INPUT_SIDE = 4096  # uploads with a longer side are refused (the model works at its own size; bounds memory)
KEY_LOCKING = ("local", "global")
VARIANTS = ("local", "global", "trained-k")


@dataclass
class Result:
    """Images and a one-line summary of how they were made."""

    images: list[Image.Image]
    summary: str


@dataclass(frozen=True)
class ConceptChoice:
    """The concepts of a call: concept files, or tokens of concepts learned in this session, with the gate's
    settings at inference (the prompt writes each concept's token)."""

    items: Sequence[str | Path] = ()
    bias: float = DEFAULT_BIAS
    temperature: float = DEFAULT_TEMPERATURE
    key_locking: str = "local"
    only_in_prompt: bool = False  # apply only the concepts whose token the prompt writes (the UI's editing tabs)


@dataclass
class Studio:
    """One pipeline shared by every request; calls run one at a time (a lock), each with its own generator."""

    pipe: object  # MusePipeline (kept untyped so importing this module stays light)
    concept_dir: Path = field(default_factory=lambda: Path("outputs/concepts"))
    learned: dict[str, Path] = field(default_factory=dict)  # token -> concept file learned in this session
    model: str | None = None  # the model folder, for the settings record in each image (None: the bundled model)

    def __post_init__(self) -> None:
        self.concept_dir = Path(self.concept_dir)
        self._lock = threading.Lock()

    # --- generation -------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        negative_prompt: str | None = "",
        seed: int = 0,
        num_images: int = 1,
        steps: int | None = None,
        guidance_scale: float | None = None,
        concepts: Sequence[str | Path] = (),
        concept_bias: float = DEFAULT_BIAS,
        concept_temperature: float = DEFAULT_TEMPERATURE,
        key_locking: str = "local",
    ) -> Result:
        """Text to images; ``concepts`` are concept files or the tokens of concepts learned in this session. The
        pipeline checks the concept options (and that the prompt writes each concept's token)."""
        prompt = check_prompt(prompt)
        num_images = check_int("number of images", num_images, 1, MAX_IMAGES)
        steps = None if steps in (None, 0) else check_int("steps", steps, 1, 64)
        sampling = sampling_record(self.pipe, steps, guidance=guidance_scale)
        record = dict(negative=optional_text(negative_prompt), **sampling, num=num_images)
        return self._run(
            "__call__",
            seed,
            prompt,
            record=("generate", prompt, record),
            concepts=ConceptChoice(concepts, concept_bias, concept_temperature, key_locking),
            negative_prompt=optional_text(negative_prompt),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images,
        )

    def _concepts(self, choice: ConceptChoice | None, prompt: str) -> tuple[dict, dict]:
        """(the pipeline's concept keyword arguments, the settings record's concept fields) of ``choice`` for
        ``prompt``; both empty without concepts. The pipeline checks the options (and that the prompt writes each
        token)."""
        loaded, files = self.load_concepts(choice.items if choice else ())
        if choice is not None and choice.only_in_prompt:
            kept = [(c, f) for c, f in zip(loaded, files) if c.token in prompt]
            loaded, files = [c for c, _ in kept], [f for _, f in kept]
        if not loaded:
            return {}, {}
        bias, temperature = float(choice.bias), float(choice.temperature)
        options = dict(concepts=loaded, concept_bias=bias, concept_temperature=temperature,
                       key_locking=choice.key_locking)  # fmt: skip
        return options, dict(concept=[str(f) for f in files], bias=bias, temperature=temperature,
                             key_locking=choice.key_locking)  # fmt: skip

    # --- editing ----------------------------------------------------------------------------------------------
    # Each editing call takes ``concepts`` (a ``ConceptChoice``) as generate does: "put <token> here".
    def inpaint(self, image, mask, prompt: str, seed: int = 0, negative_prompt: str | None = "",
                concepts: ConceptChoice | None = None) -> Result:  # fmt: skip
        """Repaint the white (painted) area of ``mask``; the rest of ``image`` is kept."""
        prompt, image = check_prompt(prompt), check_image(image)
        mask = check_image(mask, "mask").convert("L").resize(image.size, Image.NEAREST)
        if not np.asarray(mask).any():
            raise ValueError("the mask is empty: paint over the area to repaint")
        record = ("inpaint", prompt, {"negative": optional_text(negative_prompt)})
        return self._run("inpaint", seed, image, mask, prompt, negative_prompt=optional_text(negative_prompt),
                         record=record, concepts=concepts)  # fmt: skip

    def outpaint(self, image, prompt: str, left: int = 0, top: int = 0, right: int = 0, bottom: int = 0,
                 seed: int = 0, mode: str = "window", concepts: ConceptChoice | None = None) -> Result:  # fmt: skip
        """Extend ``image`` by the given pixels on each side, drawn to match ``prompt`` (``mode``: see
        ``MusePipeline.outpaint``)."""
        prompt, image = check_prompt(prompt), check_image(image)
        if mode not in OUTPAINT_MODES:
            raise ValueError(f"mode must be one of {', '.join(OUTPAINT_MODES)}, got {mode!r}")
        sides = (("left", left), ("top", top), ("right", right), ("bottom", bottom))
        pad = tuple(check_int(name, value, 0, MAX_CANVAS_SIDE) for name, value in sides)
        if not any(pad):
            raise ValueError("give at least one side a number of pixels to add")
        width, height = image.width + pad[0] + pad[2], image.height + pad[1] + pad[3]
        if max(width, height) > MAX_CANVAS_SIDE:
            raise ValueError(f"the extended image would be {width}x{height}: at most {MAX_CANVAS_SIDE} px a side")
        record = ("outpaint", prompt, {"pad": list(pad), "mode": mode})
        return self._run("outpaint", seed, image, prompt, pad=pad, mode=mode, record=record, concepts=concepts)

    def edit(self, image, prompt: str, source_prompt: str | None = "", iterations: int = 100,
             seed: int = 0, concepts: ConceptChoice | None = None) -> Result:  # fmt: skip
        """Mask-free edit toward ``prompt``; ``source_prompt`` (what the image shows) confines it to what changes."""
        prompt, image = check_prompt(prompt), check_image(image)
        iterations = check_int("iterations", iterations, 1, 1000)
        record = ("edit", prompt, {"source_prompt": optional_text(source_prompt), "iterations": iterations,
                                   "mode": "window"})  # fmt: skip
        return self._run("edit", seed, image, prompt, iterations=iterations, mode="window",
                         source_prompt=optional_text(source_prompt), record=record, concepts=concepts)  # fmt: skip

    def img2img(self, image, prompt: str, strength: float = 0.5, seed: int = 0,
                concepts: ConceptChoice | None = None) -> Result:  # fmt: skip
        """Re-generate a share of the image's tokens under ``prompt`` (0 keeps the image, 1 regenerates it)."""
        prompt, image = check_prompt(prompt), check_image(image)
        if not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        record = ("img2img", prompt, {"strength": float(strength), "mode": "window"})
        return self._run("img2img", seed, image, prompt, strength=float(strength), mode="window", record=record,
                         concepts=concepts)  # fmt: skip

    def _run(self, method: str, seed, *args, record: tuple[str, str, dict], concepts: ConceptChoice | None = None,
             **kwargs) -> Result:  # fmt: skip
        """``pipe.<method>(*args, generator=seeded, **kwargs)`` with ``concepts`` applied, under the lock, timed;
        each image carries the settings ``record`` = (command, prompt, options) (``musekit.io.metadata``), which its
        PNG download keeps."""
        seed = check_seed(seed)
        concept_kwargs, concept_record = self._concepts(concepts, record[1])
        start = time.perf_counter()
        with self._lock:
            out = getattr(self.pipe, method)(*args, generator=torch.Generator().manual_seed(seed), **kwargs,
                                             **concept_kwargs)  # fmt: skip
        command, prompt, options = record
        base = make_record(self.pipe, command, prompt, model=self.model, seed=seed, **options, **concept_record)
        images = list(out.images)
        for index, image in enumerate(images):
            attach(image, base, index=index if len(images) > 1 else None)
        text = summary(images, start, seed)
        for note in prompt_notes(prompt) if self.pipe.is_shapes_world else []:
            text += f"; note: {note}"
        return Result(images, text)

    # --- personalization --------------------------------------------------------------------------------------
    def learn(self, images: Sequence, token: str, superclass: str, steps: int | None = None, variant: str = "local",
              seed: int = 0) -> tuple[Path, str]:  # fmt: skip
        """Learn a Perfusion concept; writes ``concept_dir/<name>.safetensors`` and remembers it for ``generate``."""
        from musekit.personalize.tokens import check_token
        from musekit.personalize.trainer import PersonalizeConfig

        token, superclass, seed = check_token((token or "").strip()), (superclass or "").strip(), check_seed(seed)
        if not superclass:
            raise ValueError("superclass is empty: say what the concept is, e.g. 'red circle'")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        images = [check_image(image, f"concept image {i + 1}") for i, image in enumerate(images or [])]
        if not images:
            raise ValueError("add images of the concept (4-6 work best)")
        if len(images) > MAX_CONCEPT_IMAGES:
            raise ValueError(f"at most {MAX_CONCEPT_IMAGES} concept images, got {len(images)}")
        steps = None if steps in (None, 0) else check_int("steps", steps, 1, 2000)
        if self.pipe.precision != "fp32":
            raise ValueError(f"learning concepts needs the full-precision model, and this one runs in "
                             f"{self.pipe.precision}: start musekit ui without --int8 / --half")  # fmt: skip
        start = time.perf_counter()
        with self._lock:
            concept = self.pipe.learn_concept(images, token, superclass, steps=steps, variant=variant,
                                              config=PersonalizeConfig(seed=seed))  # fmt: skip
        seconds = time.perf_counter() - start
        path = self.concept_dir / f"{token[1:-1]}.safetensors"  # check_token: "<name>", name a safe file name
        concept.save(path)
        self.learned[token] = path
        kb = path.stat().st_size / 1024
        return path, f"learned {token} ({superclass}, {variant}) in {seconds:.1f} s: {path} ({kb:.1f} KB)"

    def register(self, path: str | Path) -> tuple[str, Path | None]:
        """Offer the concept file at ``path`` under its token, as if learned in this session; returns (the token,
        the other file the token named until now, or None). A token names one file at a time."""
        from musekit.personalize.concept import Concept

        concept, path = Concept.load(path), Path(path)
        before = self.learned.get(concept.token)
        self.learned[concept.token] = path
        return concept.token, (before if before is not None and before.resolve() != path.resolve() else None)

    def load_concepts(self, concepts: Sequence[str | Path]) -> tuple[list, list[Path]]:
        """Tokens learned in this session or concept file paths -> (``Concept`` objects, their files), in order,
        each file once."""
        from musekit.personalize.concept import Concept

        files: list[Path] = []
        for item in concepts or ():
            path = self.learned.get(str(item), Path(str(item)))
            if not path.is_file():
                raise ValueError(f"concept file not found: {item}")
            if path not in files:
                files.append(path)
        return [Concept.load(path) for path in files], files


MAX_CANVAS_SIDE = 2048  # outpainting's extended image, at most this many pixels a side


def summary(images: list[Image.Image], start: float, seed: int) -> str:
    width, height = images[0].size
    return f"{len(images)} image(s), {width}x{height}, seed {seed}, {time.perf_counter() - start:.2f} s"


def check_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("the prompt is empty: describe the image, e.g. 'a red circle on a blue background'")
    return prompt


def optional_text(text: str | None) -> str | None:
    return (text or "").strip() or None


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number in [low, high] (UI number fields give floats such as 4.0; numpy integers are fine)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())
    if isinstance(value, bool) or not whole:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {int(value)}")
    return int(value)


def check_seed(seed) -> int:
    if seed is None:
        raise ValueError("seed is empty: give a whole number (the same seed gives the same result)")
    return check_int("seed", seed, 0, MAX_SEED)


def check_image(image, what: str = "image") -> Image.Image:
    """A PIL image, an (H, W[, C]) array (uint8, or float in [0, 1]) or a file path -> PIL image, RGB with
    transparency flattened onto white (a ``what="mask"`` keeps its mode)."""
    if image is None:
        raise ValueError(f"no {what}: upload one")
    if isinstance(image, str | Path):
        image = read_image(image, what, MAX_INPUT_SIDE)
    elif isinstance(image, np.ndarray):
        if np.issubdtype(image.dtype, np.floating):
            array = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
        else:
            array = np.clip(image, 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{what} must be an image, got {type(image).__name__}")
    check_image_size(image, what, MAX_INPUT_SIDE)
    return image if what == "mask" else flatten_alpha(image)


def mask_from_layers(editor_value: dict | None) -> Image.Image:
    """The painted strokes of an image editor's value ({"background", "layers", "composite"}) as an "L" mask of
    the background's size: white where any layer is opaque."""
    if not editor_value or editor_value.get("background") is None:
        raise ValueError("no image: upload one, then paint over the area to repaint")
    background = check_image(editor_value["background"])
    mask = np.zeros((background.height, background.width), dtype=bool)
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        layer = check_image(layer, "mask") if not isinstance(layer, Image.Image) else layer
        alpha = np.asarray(layer.convert("RGBA").getchannel("A").resize(background.size, Image.NEAREST))
        mask |= alpha > 0
    return Image.fromarray((mask * 255).astype(np.uint8))
