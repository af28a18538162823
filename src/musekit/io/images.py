"""Image conversion helpers (PIL, numpy, torch) and atomic PNG writing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from musekit.io.checkpoint import atomic_replace
from musekit.io.metadata import KEY


def tensor_to_numpy(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) float32 numpy."""
    return images.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().float().numpy()


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) float in [0, 1] -> list of RGB PIL images."""
    arrays = (tensor_to_numpy(images) * 255.0).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def read_image(path: str | Path, what: str = "image", max_side: int | None = None) -> Image.Image:
    """Open an image file fully (the file is closed again); a clear ``ValueError`` when it cannot be read, or (with
    ``max_side``) when a side is longer, checked before the pixels are decoded."""
    try:
        with Image.open(path) as handle:
            if max_side is not None:
                check_image_size(handle, what, max_side)
            handle.load()
            return handle.copy()
    except FileNotFoundError:
        raise ValueError(f"{what} not found: {path}") from None
    except (Image.DecompressionBombError, OSError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from None


def check_image_size(image: Image.Image, what: str = "image", max_side: int = 4096) -> Image.Image:
    if min(image.size) < 8 or max(image.size) > max_side:
        raise ValueError(f"{what} is {image.width}x{image.height}: each side must be 8-{max_side} px")
    return image


def flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white (what a viewer shows behind them), not the colour they hide."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def make_grid(images: list[Image.Image], columns: int | None = None, padding: int = 2) -> Image.Image:
    """Tile equally sized images into one image (white padding)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * (width + padding) + padding, rows * (height + padding) + padding), "white")
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        grid.paste(image, (padding + col * (width + padding), padding + row * (height + padding)))
    return grid


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (temp file + rename); the parent folder is created. The settings record that
    ``musekit.io.metadata.attach`` put in ``image.info`` goes into the PNG as a text chunk."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    if isinstance(image.info.get(KEY), str):
        info.add_itxt(KEY, image.info[KEY])
    atomic_replace(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
    return path
