"""The shapes world: captioned procedural scenes, deterministic from a seed.

A scene is one object, or two objects related by "left of" / "above", on a plain or patterned background. Every
scene has structured labels (for the checker) and many captions (templates and synonyms). Splits:

* ``train``: every scene whose (color, shape) pairs avoid ``HELDOUT_PAIRS``;
* ``val``: the same distribution as train, other seeds (for the checker and tokenizer);
* ``heldout``: one-object scenes of a held-out (color, shape) pair, captioned canonically;
* ``heldout2``: two-object scenes whose first object is a held-out pair, captioned canonically;
* ``paraphrase``: train-distribution scenes captioned with words that never occur in training captions.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
PATTERNS = ("striped", "checkered")
BACKGROUNDS = (*COLORS, "gray", *PATTERNS)
GRAY = (128, 128, 128)
PATTERN_COLORS = ((200, 200, 200), (95, 95, 95))
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
RELATIONS = ("left of", "above")

# (color, shape) pairs never seen in training: one per color, every shape at least once.
HELDOUT_PAIRS = frozenset(
    {
        ("red", "star"),
        ("green", "triangle"),
        ("blue", "heart"),
        ("yellow", "cross"),
        ("purple", "circle"),
        ("orange", "square"),
        ("white", "heart"),
        ("black", "star"),
    }
)

SIZE_RADIUS = {"small": 0.12, "large": 0.2, "pair": 0.13}  # object radius, a fraction of the image side
_GRID = (0.22, 0.5, 0.78)

# Training vocabulary: synonyms that appear in training captions.
_TRAIN_SYNONYMS = {
    "large": ("large", "big"),
    "small": ("small", "little"),
}
_POSITION_PHRASES = {
    "top left": ("at the top left", "in the top left corner", "in the upper left"),
    "top": ("at the top", "at the top middle", "in the upper part"),
    "top right": ("at the top right", "in the top right corner", "in the upper right"),
    "left": ("at the left", "on the left side", "at the middle left"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("at the right", "on the right side", "at the middle right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left"),
    "bottom": ("at the bottom", "at the bottom middle", "in the lower part"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right"),
}
_ONE_TEMPLATES = (
    "a {size} {color} {shape} {where} on a {background} background",
    "a {color} {shape}, {size}, {where}, on a {background} background",
    "{where} there is a {size} {color} {shape} on a {background} background",
    "a {background} background with a {size} {color} {shape} {where}",
    "{size} {color} {shape} {where}, {background} background",
)
_TWO_TEMPLATES = {
    "left of": (
        "a {c1} {s1} left of a {c2} {s2} on a {background} background",
        "a {c1} {s1} to the left of a {c2} {s2}, {background} background",
        "a {c2} {s2} right of a {c1} {s1} on a {background} background",
    ),
    "above": (
        "a {c1} {s1} above a {c2} {s2} on a {background} background",
        "a {c1} {s1} over a {c2} {s2}, {background} background",
        "a {c2} {s2} below a {c1} {s1} on a {background} background",
    ),
}

# Words that never appear in training captions (what a pretrained text encoder is for).
PARAPHRASE_COLORS = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald",),
    "blue": ("azure", "navy"),
    "yellow": ("golden",),
    "purple": ("violet",),
    "orange": ("tangerine",),
    "white": ("snowy", "ivory"),
    "black": ("jet-black", "ebony"),
    "gray": ("grey", "ash"),
}
PARAPHRASE_SHAPES = {
    "circle": ("ring", "disk"),
    "square": ("box",),
    "triangle": ("pyramid",),
    "star": ("pentagram",),
    "heart": ("love symbol",),
    "cross": ("plus sign",),
}
PARAPHRASE_SIZES = {"large": ("huge", "giant"), "small": ("tiny", "miniature")}
_PARAPHRASE_TEMPLATE = "a {size} {color} {shape} {where} on a {background} background"


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    size: str  # "small" | "large" | "pair" (the fixed size of two-object scenes)
    position: str


@dataclass(frozen=True)
class Scene:
    """One scene: one or two objects; ``relation`` links objects[0] to objects[1] ("left of" / "above")."""

    objects: tuple[ShapeObject, ...]
    background: str
    relation: str | None = None
    jitter: tuple[float, ...] = field(default=(), compare=False)  # rendering noise, drawn with the scene

    def canonical_caption(self) -> str:
        if self.relation is None:
            o = self.objects[0]
            where = "in the center" if o.position == "center" else f"at the {o.position}"
            return with_articles(f"a {o.size} {o.color} {o.shape} {where} on a {self.background} background")
        a, b = self.objects
        text = f"a {a.color} {a.shape} {self.relation} a {b.color} {b.shape} on a {self.background} background"
        return with_articles(text)


def with_articles(text: str) -> str:
    """Use "an" before a vowel sound ("an orange square")."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", lambda m: m.group(1) + "n ", text)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _background_for(rng: np.random.Generator, colors: list[str]) -> str:
    options = [b for b in BACKGROUNDS if b not in colors]
    return _pick(rng, options)


def sample_scene(rng: np.random.Generator, two_objects: bool, heldout: bool = False) -> Scene:
    """Draw a scene; ``heldout`` forces the (first) object's (color, shape) into ``HELDOUT_PAIRS``."""
    held = sorted(HELDOUT_PAIRS)
    allowed = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELDOUT_PAIRS]
    first = _pick(rng, held) if heldout else _pick(rng, allowed)
    jitter = tuple(float(x) for x in rng.uniform(-1.0, 1.0, size=8))
    if not two_objects:
        obj = ShapeObject(first[1], first[0], _pick(rng, SIZES), _pick(rng, POSITIONS))
        return Scene((obj,), _background_for(rng, [obj.color]), None, jitter)
    second = _pick(rng, [p for p in allowed if p[0] != first[0]])
    relation = _pick(rng, RELATIONS)
    line = int(rng.integers(3))
    rows = ("top", "", "bottom")
    cols = ("left", "", "right")
    if relation == "left of":
        pos_a, pos_b = _position(rows[line], "left"), _position(rows[line], "right")
    else:
        pos_a, pos_b = _position("top", cols[line]), _position("bottom", cols[line])
    a = ShapeObject(first[1], first[0], "pair", pos_a)
    b = ShapeObject(second[1], second[0], "pair", pos_b)
    return Scene((a, b), _background_for(rng, [a.color, b.color]), relation, jitter)


def _position(row: str, col: str) -> str:
    name = f"{row} {col}".strip()
    return name if name else "center"


@functools.cache
def vocabulary() -> frozenset[str]:
    """Every word of the training captions: templates, synonyms, and the attributes' names (built once)."""
    texts = [*_ONE_TEMPLATES, *(t for group in _TWO_TEMPLATES.values() for t in group), *COLORS, *SHAPES,
             *BACKGROUNDS, *SIZES, *POSITIONS, *RELATIONS, "an", "in the center"]  # fmt: skip
    texts += [w for group in (*_TRAIN_SYNONYMS.values(), *_POSITION_PHRASES.values()) for w in group]
    words = re.findall(r"[a-z]+", re.sub(r"\{[a-z0-9]+\}", " ", " ".join(texts).lower()))
    return frozenset(words)


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` that no training caption uses, in order, once each (concept tokens such as
    ``<emblem>`` are not words). A model trained on the shapes world can only guess at them."""
    known, seen = vocabulary(), []
    for word in re.findall(r"<[^>]*>|[^\W\d_]+", prompt.lower()):  # words of letters, in any script
        if not word.startswith("<") and word not in known and word not in seen:
            seen.append(word)
    return seen


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A random training caption of ``scene`` (templates and synonyms)."""
    if scene.relation is None:
        o = scene.objects[0]
        return with_articles(
            _pick(rng, _ONE_TEMPLATES).format(
                size=_pick(rng, _TRAIN_SYNONYMS[o.size]),
                color=o.color,
                shape=o.shape,
                where=_pick(rng, _POSITION_PHRASES[o.position]),
                background=scene.background,
            )
        )
    a, b = scene.objects
    template = _pick(rng, _TWO_TEMPLATES[scene.relation])
    return with_articles(template.format(c1=a.color, s1=a.shape, c2=b.color, s2=b.shape, background=scene.background))


def paraphrase_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A one-object caption using only words that never appear in training captions for color/shape/size."""
    o = scene.objects[0]
    background = scene.background
    if background in PARAPHRASE_COLORS:
        background = _pick(rng, PARAPHRASE_COLORS[background])
    return with_articles(
        _PARAPHRASE_TEMPLATE.format(
            size=_pick(rng, PARAPHRASE_SIZES[o.size]),
            color=_pick(rng, PARAPHRASE_COLORS[o.color]),
            shape=_pick(rng, PARAPHRASE_SHAPES[o.shape]),
            where=_POSITION_PHRASES[o.position][0],
            background=background,
        )
    )


# --- rendering ---------------------------------------------------------------------------------------------------
def _jittered(color: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c + 8 * amount))) for c in color)


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def rotate(points):
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]

    if shape == "square":
        s = r * 0.85
        return rotate([(-s, -s), (s, -s), (s, s), (-s, s)])
    if shape == "triangle":
        return rotate([(0, -r), (r * 0.95, r * 0.7), (-r * 0.95, r * 0.7)])
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.42
            theta = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(theta), rad * math.sin(theta)))
        return rotate(pts)
    if shape == "cross":
        a, b = r, r * 0.33
        return rotate([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
                       (-a, -b), (-b, -b)])  # fmt: skip
    if shape == "heart":
        pts = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x * r / 16.5, (y + 2.5) * r / 16.5))
        return rotate(pts)
    raise ValueError(f"unknown shape {shape!r}")


def _draw_background(draw: ImageDraw.ImageDraw, background: str, size: int, jitter: float) -> None:
    if background in COLORS:
        draw.rectangle([0, 0, size, size], fill=_jittered(COLORS[background], jitter))
    elif background == "gray":
        draw.rectangle([0, 0, size, size], fill=_jittered(GRAY, jitter))
    elif background == "striped":
        light, dark = PATTERN_COLORS
        draw.rectangle([0, 0, size, size], fill=light)
        period = size / 8
        for i in range(-8, 17):
            x0 = i * period
            draw.polygon([(x0, 0), (x0 + period / 2, 0), (x0 + period / 2 - size, size), (x0 - size, size)], fill=dark)
    elif background == "checkered":
        light, dark = PATTERN_COLORS
        cell = size / 8
        for i in range(8):
            for j in range(8):
                fill = light if (i + j) % 2 == 0 else dark
                draw.rectangle([i * cell, j * cell, (i + 1) * cell, (j + 1) * cell], fill=fill)
    else:
        raise ValueError(f"unknown background {background!r}")


def _draw_objects(draw: ImageDraw.ImageDraw, scene: Scene, big: int, fill=None) -> None:
    """Draw the objects of ``scene`` on a ``big`` x ``big`` canvas (in their colors, or all in ``fill``)."""
    j = scene.jitter or (0.0,) * 8
    for index, obj in enumerate(scene.objects):
        row, col = divmod(POSITIONS.index(obj.position), 3)
        jx, jy = j[1 + 2 * index] * 0.025, j[2 + 2 * index] * 0.025
        cx, cy = (_GRID[col] + jx) * big, (_GRID[row] + jy) * big
        r = SIZE_RADIUS[obj.size] * big * (1 + 0.05 * j[5])
        color = _jittered(COLORS[obj.color], j[6 + index]) if fill is None else fill
        angle = math.radians(8 * j[7 - index])
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        else:
            draw.polygon(_shape_polygon(obj.shape, cx, cy, r, angle), fill=color)


def render(scene: Scene, size: int = 128, supersample: int = 4) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` x ``size`` (anti-aliased by supersampling)."""
    big = size * supersample
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene.background, big, (scene.jitter or (0.0,))[0])
    _draw_objects(draw, scene, big)
    return image.resize((size, size), Image.Resampling.LANCZOS if supersample > 1 else Image.Resampling.NEAREST)


def object_coverage(scene: Scene, size: int = 128, supersample: int = 4) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the fraction of each pixel covered by an object (same geometry as ``render``)."""
    big = size * supersample
    mask = Image.new("L", (big, big), 0)
    _draw_objects(ImageDraw.Draw(mask), scene, big, fill=255)
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


# --- labels for the checker --------------------------------------------------------------------------------------
LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "count": ("one", "two"),
    "color": tuple(COLORS),
    "shape": SHAPES,
    "position": POSITIONS,
    "size": SIZES,
    "background": BACKGROUNDS,
    "relation": RELATIONS,
    "color2": tuple(COLORS),
    "shape2": SHAPES,
}
IGNORE = -1


def scene_labels(scene: Scene) -> dict[str, int]:
    """Integer labels per attribute; ``IGNORE`` where an attribute does not apply (e.g. size of a pair)."""
    first = scene.objects[0]
    labels = {
        "count": len(scene.objects) - 1,
        "color": LABEL_SPACES["color"].index(first.color),
        "shape": SHAPES.index(first.shape),
        "position": POSITIONS.index(first.position),
        "size": SIZES.index(first.size) if first.size in SIZES else IGNORE,
        "background": BACKGROUNDS.index(scene.background),
        "relation": IGNORE,
        "color2": IGNORE,
        "shape2": IGNORE,
    }
    if scene.relation is not None:
        second = scene.objects[1]
        labels.update(
            relation=RELATIONS.index(scene.relation),
            color2=LABEL_SPACES["color2"].index(second.color),
            shape2=SHAPES.index(second.shape),
        )
    return labels


# --- splits ------------------------------------------------------------------------------------------------------
SPLITS = ("train", "val", "heldout", "heldout2", "paraphrase")


@dataclass(frozen=True)
class Example:
    scene: Scene
    caption: str


class ShapesWorld:
    """Deterministic captioned scenes: ``world.example(split, index)``; ``world.stream(split)`` never ends.

    Args:
        seed: world seed; the same (seed, split, index) always gives the same example.
        two_object_fraction: share of two-object scenes in train/val.
        jitter: scale of the rendering noise (colour, position, size and rotation jitter); 0 renders every scene
            exactly on its attributes (the same scenes and captions: only the drawing changes).
    """

    def __init__(self, seed: int = 0, two_object_fraction: float = 0.4, jitter: float = 1.0) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter}")
        self.seed = seed
        self.two_object_fraction = two_object_fraction
        self.jitter = jitter

    def example(self, split: str, index: int) -> Example:
        example = self._example(split, index)
        if self.jitter == 1.0:
            return example
        scene = replace(example.scene, jitter=tuple(j * self.jitter for j in example.scene.jitter))
        return Example(scene, example.caption)

    def _example(self, split: str, index: int) -> Example:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        rng = _rng(self.seed, split, index)
        if split in ("train", "val"):
            scene = sample_scene(rng, two_objects=bool(rng.random() < self.two_object_fraction))
            return Example(scene, caption(scene, rng))
        if split == "heldout":
            scene = sample_scene(rng, two_objects=False, heldout=True)
            return Example(scene, scene.canonical_caption())
        if split == "heldout2":
            scene = sample_scene(rng, two_objects=True, heldout=True)
            return Example(scene, scene.canonical_caption())
        scene = sample_scene(rng, two_objects=False)
        return Example(scene, paraphrase_caption(scene, rng))

    def examples(self, split: str, count: int, start: int = 0) -> list[Example]:
        return [self.example(split, i) for i in range(start, start + count)]

    def stream(self, split: str = "train", start: int = 0) -> Iterator[Example]:
        index = start
        while True:
            yield self.example(split, index)
            index += 1


def training_vocabulary(world: ShapesWorld, samples: int = 3000) -> set[str]:
    """Every word used by training captions (sampled), for checking that paraphrases are unseen."""
    words: set[str] = set()
    for ex in world.examples("train", samples):
        words.update(ex.caption.replace(",", " ").split())
    return words
