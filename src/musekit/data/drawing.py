"""Drawing one shapes-world scene with PIL: backgrounds, the six shapes, anti-aliased renders and object masks."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from musekit.data.shapes import _GRID, COLORS, GRAY, PATTERN_COLORS, POSITIONS, SIZE_RADIUS, Scene


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


def draw_background(draw: ImageDraw.ImageDraw, background: str, size: int, jitter: float) -> None:
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
    draw_background(draw, scene.background, big, (scene.jitter or (0.0,))[0])
    _draw_objects(draw, scene, big)
    return image.resize((size, size), Image.Resampling.LANCZOS if supersample > 1 else Image.Resampling.NEAREST)


def object_coverage(scene: Scene, size: int = 128, supersample: int = 4) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the fraction of each pixel covered by an object (same geometry as ``render``)."""
    big = size * supersample
    mask = Image.new("L", (big, big), 0)
    _draw_objects(ImageDraw.Draw(mask), scene, big, fill=255)
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
