"""Novel objects for personalization: things the shapes world never draws, rendered into its scenes.

Each concept is a distinctive patterned emblem. ``concept_images`` gives the few training images a user would
supply; ``concept_scene`` renders the concept at a given position and size on a given background, so generated
images can be compared with ground truth.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from musekit.data.drawing import draw_background
from musekit.data.shapes import _GRID, BACKGROUNDS, COLORS, POSITIONS, SIZE_RADIUS, with_articles

# "superclass" is what each concept's key is locked to: its colour and shape words. The shapes-world models read an
# object's colour and its shape from separate words, so a key locked to the shape word alone leaves the image
# positions that look for a colour word with nothing to find, and the concept comes out in scattered colours (as the
# base model draws "a circle" with no colour); with the phrase, the concept gets a placeholder for each word, each
# locked to its own word's key (measured in docs/BENCHMARKS.md). "shape" is the shapes-world shape it resembles.
CONCEPTS: dict[str, dict] = {
    # a red-and-white bullseye emblem
    "bullseye": {"superclass": "red circle", "shape": "circle", "colors": ((220, 40, 40), (240, 240, 240))},
    # a yellow diamond with a black stripe
    "diamond": {"superclass": "yellow square", "shape": "square", "colors": ((240, 210, 40), (20, 20, 20))},
    # an orange crescent moon
    "crescent": {"superclass": "orange circle", "shape": "circle", "colors": ((245, 140, 30), (245, 140, 30))},
    # Validation concepts: for choosing settings (benchmarks/concept_lr_probe.py), never in the evaluation's set.
    # a purple arrow pointing up
    "arrow": {"superclass": "purple triangle", "shape": "triangle", "colors": ((140, 60, 180), (240, 240, 240))},
    # a blue ring with a white hole
    "ring": {"superclass": "blue circle", "shape": "circle", "colors": ((40, 80, 220), (240, 240, 240))},
    # a green flag with a white cross
    "flag": {"superclass": "green square", "shape": "square", "colors": ((40, 170, 60), (240, 240, 240))},
}


def _draw_concept(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, background_fill) -> None:
    first, second = CONCEPTS[name]["colors"]
    if name == "bullseye":
        for k, color in enumerate((first, second, first, second)):
            rad = r * (1 - k * 0.25)
            draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=color)
    elif name == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=first)
        draw.polygon([(cx - r * 0.4, cy - r * 0.08), (cx + r * 0.4, cy - r * 0.08), (cx + r * 0.4, cy + r * 0.08),
                      (cx - r * 0.4, cy + r * 0.08)], fill=second)  # fmt: skip
    elif name == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=first)
        off = r * 0.45
        draw.ellipse([cx - r + off, cy - r - off * 0.3, cx + r + off, cy + r - off * 0.3], fill=background_fill)
    elif name == "arrow":
        shaft = r * 0.28
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy - r * 0.1), (cx - r * 0.8, cy - r * 0.1)], fill=first)
        draw.rectangle([cx - shaft, cy - r * 0.15, cx + shaft, cy + r], fill=first)
    elif name == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=first)
        hole = r * 0.5
        draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=second)
    elif name == "flag":
        side, arm, half = r * 0.85, r * 0.5, r * 0.14
        draw.rectangle([cx - side, cy - side, cx + side, cy + side], fill=first)
        draw.rectangle([cx - arm, cy - half, cx + arm, cy + half], fill=second)
        draw.rectangle([cx - half, cy - arm, cx + half, cy + arm], fill=second)
    else:
        raise ValueError(f"unknown concept {name!r}; choose one of {sorted(CONCEPTS)}")


def concept_scene(name: str, position: str, background: str, size: int = 128, large: bool = True) -> Image.Image:
    """The concept at ``position`` on ``background`` (a shapes-world background name)."""
    return _scene([(name, position, 0.2 if large else 0.13)], background, size)


def concept_pair_scene(left: str, right: str, row: str, background: str, size: int = 128) -> Image.Image:
    """Concept ``left`` left of concept ``right`` in ``row`` ("top", "middle" or "bottom"), at the shapes world's
    pair size: what "a <left> left of a <right> on a ... background" should draw."""
    rows = {"top": "top ", "middle": "", "bottom": "bottom "}
    if row not in rows:
        raise ValueError(f"row must be one of {sorted(rows)}, got {row!r}")
    radius = SIZE_RADIUS["pair"]
    return _scene([(left, f"{rows[row]}left", radius), (right, f"{rows[row]}right", radius)], background, size)


def _scene(objects: list[tuple[str, str, float]], background: str, size: int) -> Image.Image:
    """(concept, position, radius as a fraction of the side) objects drawn on ``background``, supersampled 4x."""
    big = size * 4
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    draw_background(draw, background, big, 0.0)
    fill = image.getpixel((0, 0)) if background not in ("striped", "checkered") else (200, 200, 200)
    for name, position, radius in objects:
        row, col = divmod(POSITIONS.index(position), 3)
        _draw_concept(draw, name, _GRID[col] * big, _GRID[row] * big, radius * big, fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def concept_examples(name: str, count: int = 5, size: int = 128, seed: int = 0) -> list[tuple[Image.Image, str, str]]:
    """``count`` training images of the concept, varied positions on varied plain backgrounds, as (image, position,
    caption): the caption describes the image in the shapes world's words with ``{}`` for the concept (what a user
    writes for each image, e.g. "a large {} at the top left on a blue background")."""
    rng = np.random.default_rng(seed + sum(map(ord, name)))
    plain = backgrounds_for(name)
    out = []
    for _ in range(count):
        position = POSITIONS[int(rng.integers(len(POSITIONS)))]
        background = plain[int(rng.integers(len(plain)))]
        large = bool(rng.random() < 0.7)
        where = "in the center" if position == "center" else f"at the {position}"
        text = with_articles(f"a {'large' if large else 'small'} {{}} {where} on a {background} background")
        out.append((concept_scene(name, position, background, size, large=large), position, text))
    return out


def concept_images(name: str, count: int = 5, size: int = 128, seed: int = 0) -> list[Image.Image]:
    """``count`` training images of the concept (see ``concept_examples``)."""
    return [image for image, _, _ in concept_examples(name, count, size, seed)]


def backgrounds_for(name: str) -> list[str]:
    """Plain backgrounds on which the concept stays visible (none of its own colours)."""
    colors = set(CONCEPTS[name]["colors"])
    return [b for b in BACKGROUNDS if b not in ("striped", "checkered") and COLORS.get(b) not in colors]


def cell_box(position: str, size: int) -> tuple[int, int, int, int]:
    """The square around a position's centre that holds a large object (for cropping the concept region)."""
    row, col = divmod(POSITIONS.index(position), 3)
    half = math.ceil(0.22 * size)
    cx, cy = int(_GRID[col] * size), int(_GRID[row] * size)
    return max(0, cx - half), max(0, cy - half), min(size, cx + half), min(size, cy + half)
