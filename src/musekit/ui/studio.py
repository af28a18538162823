"""What the web UI does, without the UI: generation, editing and personalization on one loaded pipeline.

Every method checks its inputs and raises ``ValueError`` with a one-line message (the UI shows it as an error
toast), takes a seed (same seed, same result) and returns PIL images plus a one-line summary. Nothing here imports
gradio, so it is tested like the rest of the library.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE

logger = logging.getLogger(__name__)

MAX_IMAGES = 8  # images per generate call
MAX_CONCEPT_IMAGES = 10
KEY_LOCKING = ("local", "global")
VARIANTS = ("local", "global", "trained-k")


@dataclass
class Result:
    """Images and a one-line summary of how they were made."""

    images: list[Image.Image]
    summary: str


@dataclass
class Studio:
    """One pipeline shared by every request; calls run one at a time (a lock), each with its own generator."""

    pipe: object  # MusePipeline (kept untyped so importing this module stays light)
    concept_dir: Path = field(default_factory=lambda: Path("outputs/concepts"))
    learned: dict[str, Path] = field(default_factory=dict)  # token -> concept file learned in this session

    def __post_init__(self) -> None:
        self.concept_dir = Path(self.concept_dir)
        self._lock = threading.Lock()

    # --- generation -------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        seed: int = 0,
        num_images: int = 1,
        steps: int | None = None,
        guidance_scale: float | None = None,
        concepts: Sequence[str | Path] = (),
        concept_bias: float = DEFAULT_BIAS,
        concept_temperature: float = DEFAULT_TEMPERATURE,
        key_locking: str = "local",
    ) -> Result:
        """Text to images; ``concepts`` are concept files (uploaded or learned in this session)."""
        prompt = check_prompt(prompt)
        num_images = check_int("number of images", num_images, 1, MAX_IMAGES)
        steps = None if steps in (None, 0) else check_int("steps", steps, 1, 64)
        if key_locking not in KEY_LOCKING:
            raise ValueError(f"key-locking must be one of {', '.join(KEY_LOCKING)}, got {key_locking!r}")
        if concept_temperature <= 0:
            raise ValueError(f"concept temperature must be positive, got {concept_temperature}")
        files = self.concept_files(concepts)
        missing = [tok for tok in self.tokens_of(files) if tok not in prompt]
        if missing:
            raise ValueError(f"the prompt does not use the concept {missing[0]}: write it in, e.g. 'a {missing[0]}'")
        start = time.perf_counter()
        with self._lock:
            out = self.pipe(
                prompt,
                negative_prompt=negative_prompt.strip() or None,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                num_images_per_prompt=num_images,
                generator=torch.Generator().manual_seed(int(seed)),
                concepts=[str(f) for f in files] or None,
                concept_bias=float(concept_bias),
                concept_temperature=float(concept_temperature),
                key_locking=key_locking,
            )
        return Result(list(out.images), self._summary(out.images, start, seed))

    # --- editing ----------------------------------------------------------------------------------------------
    def inpaint(self, image, mask, prompt: str, seed: int = 0, negative_prompt: str = "") -> Result:
        """Repaint the white (painted) area of ``mask``; the rest of ``image`` is kept."""
        prompt = check_prompt(prompt)
        image = check_image(image)
        mask = check_image(mask, "mask").convert("L").resize(image.size, Image.NEAREST)
        if not np.asarray(mask).any():
            raise ValueError("the mask is empty: paint over the area to repaint")
        return self._edit("inpaint", seed, image, mask, prompt, negative_prompt=negative_prompt.strip() or None)

    def outpaint(self, image, prompt: str, left: int = 0, top: int = 0, right: int = 0, bottom: int = 0,
                 seed: int = 0) -> Result:  # fmt: skip
        """Extend ``image`` by the given pixels on each side, drawn to match ``prompt``."""
        prompt = check_prompt(prompt)
        image = check_image(image)
        pad = tuple(check_int(name, value, 0, 4 * max(image.size)) for name, value in
                    (("left", left), ("top", top), ("right", right), ("bottom", bottom)))  # fmt: skip
        if not any(pad):
            raise ValueError("give at least one side a number of pixels to add")
        return self._edit("outpaint", seed, image, prompt, pad=pad)

    def edit(self, image, prompt: str, source_prompt: str = "", iterations: int = 100, seed: int = 0) -> Result:
        """Mask-free edit toward ``prompt``; ``source_prompt`` (what the image shows) confines it to what changes."""
        prompt = check_prompt(prompt)
        image = check_image(image)
        iterations = check_int("iterations", iterations, 1, 1000)
        return self._edit("edit", seed, image, prompt, iterations=iterations,
                          source_prompt=source_prompt.strip() or None)  # fmt: skip

    def _edit(self, method: str, seed: int, image: Image.Image, *args, **kwargs) -> Result:
        if image.size != (self.pipe.image_size, self.pipe.image_size) and method != "outpaint":
            logger.info("input resized from %dx%d to the model's %d px", *image.size, self.pipe.image_size)
        start = time.perf_counter()
        with self._lock:
            out = getattr(self.pipe, method)(image, *args, generator=torch.Generator().manual_seed(int(seed)), **kwargs)
        return Result(list(out.images), self._summary(out.images, start, seed))

    # --- personalization --------------------------------------------------------------------------------------
    def learn(self, images: Sequence, token: str, superclass: str, steps: int | None = None, variant: str = "local",
              seed: int = 0) -> tuple[Path, str]:  # fmt: skip
        """Learn a Perfusion concept; writes ``concept_dir/<name>.safetensors`` and remembers it for ``generate``."""
        from musekit.personalize.tokens import check_token
        from musekit.personalize.trainer import PersonalizeConfig

        check_token(token.strip())
        token = token.strip()
        if not superclass.strip():
            raise ValueError("superclass is empty: say what the concept is, e.g. 'red circle'")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        images = [check_image(image, f"concept image {i + 1}") for i, image in enumerate(images or [])]
        if not images:
            raise ValueError("add images of the concept (4-6 work best)")
        if len(images) > MAX_CONCEPT_IMAGES:
            raise ValueError(f"at most {MAX_CONCEPT_IMAGES} concept images, got {len(images)}")
        steps = None if steps in (None, 0) else check_int("steps", steps, 1, 2000)
        start = time.perf_counter()
        with self._lock:
            concept = self.pipe.learn_concept(images, token, superclass.strip(), steps=steps, variant=variant,
                                              config=PersonalizeConfig(seed=int(seed)))  # fmt: skip
        seconds = time.perf_counter() - start
        path = self.concept_dir / f"{re.sub(r'[^a-z0-9_-]', '', token)}.safetensors"
        concept.save(path)
        self.learned[token] = path
        kb = path.stat().st_size / 1024
        return path, f"learned {token} ({superclass.strip()}, {variant}) in {seconds:.1f} s: {path} ({kb:.1f} KB)"

    # --- helpers ----------------------------------------------------------------------------------------------
    def concept_files(self, concepts: Sequence[str | Path]) -> list[Path]:
        """Concept names learned in this session (their tokens) or file paths -> existing files, in order, once."""
        files: list[Path] = []
        for item in concepts or ():
            path = self.learned.get(str(item), Path(str(item)))
            if not path.is_file():
                raise ValueError(f"concept file not found: {item}")
            if path not in files:
                files.append(path)
        return files

    @staticmethod
    def tokens_of(files: Sequence[Path]) -> list[str]:
        from musekit.personalize.concept import Concept

        return [Concept.load(path).token for path in files]

    def _summary(self, images: list[Image.Image], start: float, seed: int) -> str:
        seconds = time.perf_counter() - start
        width, height = images[0].size
        return f"{len(images)} image(s), {width}x{height}, seed {int(seed)}, {seconds:.2f} s"


def check_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("the prompt is empty: describe the image, e.g. 'a red circle on a blue background'")
    return prompt


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number in [low, high] (UI number fields give floats such as 4.0)."""
    whole = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not whole:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {int(value)}")
    return int(value)


def check_image(image, what: str = "image") -> Image.Image:
    """A PIL image, numpy array (H, W, C) uint8 or a file path -> RGB (or the mask's own mode) PIL image."""
    if image is None:
        raise ValueError(f"no {what}: upload one")
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as handle:
                image = handle.copy()
        except (FileNotFoundError, OSError) as err:
            raise ValueError(f"cannot read {what} {image}: {err}") from None
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{what} must be an image, got {type(image).__name__}")
    if min(image.size) < 8:
        raise ValueError(f"{what} is too small ({image.width}x{image.height})")
    return image if what == "mask" else flatten_alpha(image)


def flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white (what a viewer shows behind them)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def mask_from_layers(editor_value: dict | None) -> Image.Image:
    """The painted strokes of an image editor's value ({"background", "layers", "composite"}) as an "L" mask:
    white where any layer is opaque."""
    if not editor_value or editor_value.get("background") is None:
        raise ValueError("no image: upload one, then paint over the area to repaint")
    layers = [layer for layer in editor_value.get("layers") or [] if layer is not None]
    background = check_image(editor_value["background"])
    mask = np.zeros((background.height, background.width), dtype=bool)
    for layer in layers:
        layer = Image.fromarray(layer) if isinstance(layer, np.ndarray) else layer
        alpha = np.asarray(layer.convert("RGBA").getchannel("A").resize(background.size, Image.NEAREST))
        mask |= alpha > 0
    return Image.fromarray((mask * 255).astype(np.uint8))
