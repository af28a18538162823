"""A dependency-free scatter/line plot drawn with PIL (for benchmark PNGs)."""

from __future__ import annotations

from PIL import Image, ImageDraw

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127))  # fmt: skip


def line_plot(
    series: dict[str, list[tuple[float, float, str]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 480),
) -> Image.Image:
    """``series``: name -> points (x, y, label); series with one point are drawn as markers, others as lines."""
    width, height = size
    left, right, top, bottom = 70, 190, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    points = [(x, y) for pts in series.values() for x, y, _ in pts]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad_x, pad_y = (x1 - x0) * 0.08 or 0.05, (y1 - y0) * 0.08 or 0.05
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for k in range(5):
        fx, fy = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        px, _ = to_px(fx, y0)
        _, py = to_px(x0, fy)
        draw.text((px - 12, height - bottom + 6), f"{fx:.3f}", fill="black")
        draw.text((left - 44, py - 6), f"{fy:.3f}", fill="black")
    draw.text((width / 2 - 100, 12), title, fill="black")
    draw.text((width / 2 - 60, height - 25), xlabel, fill="black")
    draw.text((5, top - 25), ylabel, fill="black")
    for index, (name, pts) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        pixels = [to_px(x, y) for x, y, _ in pts]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for (px, py), (_, _, label) in zip(pixels, pts):
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
            if label:
                draw.text((px + 5, py - 12), label, fill=color)
        draw.text((width - right + 12, top + 18 * index), f"- {name}", fill=color)
    return image
