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
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

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


def prompt_words(prompt: str) -> list[str]:
    """The words of ``prompt``, lower-cased: runs of letters in any script, and concept tokens (``<emblem>``) whole."""
    return re.findall(r"<[^>]*>|[^\W\d_]+", prompt.lower())


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` that no training caption uses, in order, once each (concept tokens such as
    ``<emblem>`` are not words). A model trained on the shapes world can only guess at them."""
    known, seen = vocabulary(), []
    for word in prompt_words(prompt):
        if not word.startswith("<") and word not in known and word not in seen:
            seen.append(word)
    return seen


def names_an_object(prompt: str) -> bool:
    """Whether ``prompt`` names a shape of the shapes world or a concept token (``<emblem>``)."""
    words = prompt_words(prompt)
    return any(word.startswith("<") or word in SHAPES for word in words)


_SIZE_WORDS = frozenset(word for words in _TRAIN_SYNONYMS.values() for word in words)
_PLACE_WORDS = frozenset(re.findall(r"[a-z]+", " ".join(p for ps in _POSITION_PHRASES.values() for p in ps))) - {
    "at", "the", "in", "on", "corner", "side", "part"}  # fmt: skip


def left_out(prompt: str) -> list[str]:
    """What a prompt naming one or two shapes leaves out of a whole shapes-world caption: "size" and "position"
    (one object), "colour" (of a named shape), "background". Every training caption of the bundled model names all
    of them (a concept token stands for a shape and its colour, and its prompts need no size)."""
    words = prompt_words(prompt)
    shapes, tokens = sum(w in SHAPES for w in words), sum(w.startswith("<") for w in words)
    if not shapes + tokens:
        return []
    missing = []
    if shapes == 1 and not tokens and not _SIZE_WORDS & set(words):
        missing.append("size")
    if shapes + tokens == 1 and not _PLACE_WORDS & set(words):
        missing.append("position")
    colors = sum(w in COLORS for w in words) - any(a in COLORS and b == "background" for a, b in zip(words, words[1:]))
    if colors < shapes:
        missing.append("colour")
    if "background" not in words:
        missing.append("background")
    return missing


def prompt_notes(prompt: str) -> list[str]:
    """What a model trained on the shapes world will make of ``prompt`` that its user may not expect: the words it
    never saw, a prompt that names no shape (every training scene has one or two objects, so it draws stray
    fragments of objects instead of an empty background), and a caption that leaves out parts every training caption
    names (``left_out``). Empty when the prompt is a whole caption in the world's words."""
    notes = []
    unknown = unknown_words(prompt)
    if unknown:
        notes.append(f"the model never saw {', '.join(repr(w) for w in unknown)} in training and may ignore "
                     "them: it draws shapes, colours, sizes, positions and backgrounds (see the README)")  # fmt: skip
    if not names_an_object(prompt):
        notes.append(f"the prompt names no shape ({', '.join(SHAPES)}); the model draws one or two objects "
                     "in every image, so without one it draws stray fragments")  # fmt: skip
    missing = left_out(prompt)
    if missing:
        notes.append(f"the prompt leaves out the {', '.join(missing)}: the model learned from whole captions "
                     "and often draws fragments without them (write e.g. 'a large red circle in the center on a blue "
                     "background')")  # fmt: skip
    return notes


def caption(scene: Scene, rng: np.random.Generator, partial: float = 0.0) -> str:
    """A random training caption of ``scene`` (templates and synonyms); with probability ``partial`` a caption that
    leaves some attributes out (``partial_caption``), so that a model learns to choose what a prompt does not say."""
    if partial > 0 and rng.random() < partial:
        return partial_caption(scene, rng)
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


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of ``scene`` that names every object's shape but leaves out each other attribute with probability
    1/2 (size, colour, position and background of one object; the colours and the background of two): "a red
    circle", "a star above a green heart", "a small square on a blue background"."""
    return partial_caption_and_names(scene, rng)[0]


def partial_caption_and_names(scene: Scene, rng: np.random.Generator) -> tuple[str, frozenset[str]]:
    """``partial_caption`` and the attributes it names (``LABEL_SPACES`` keys; shapes, count and relation always)."""
    named = {"count", "shape"}
    if scene.relation is None:
        o = scene.objects[0]
        parts = {
            "size": _pick(rng, _TRAIN_SYNONYMS[o.size]),
            "color": o.color,
            "position": _pick(rng, _POSITION_PHRASES[o.position]),
            "background": f"on a {scene.background} background",
        }
        parts = {key: value if rng.random() < 0.5 else "" for key, value in parts.items()}
        named |= {key for key, value in parts.items() if value}
        text = f"a {parts['size']} {parts['color']} {o.shape} {parts['position']} {parts['background']}"
    else:
        named |= {"shape2", "relation"}
        template = _pick(rng, _TWO_TEMPLATES[scene.relation])
        if rng.random() < 0.5:
            template = re.sub(r",? (on a )?\{background\} background", "", template)
        else:
            named.add("background")
        a, b = scene.objects
        colors = [c if rng.random() < 0.5 else "" for c in (a.color, b.color)]
        named |= {key for key, c in zip(("color", "color2"), colors) if c}
        text = template.format(c1=colors[0], s1=a.shape, c2=colors[1], s2=b.shape, background=scene.background)
    return with_articles(" ".join(text.split())), frozenset(named)


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
