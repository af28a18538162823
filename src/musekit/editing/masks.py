"""Images and masks in, token masks and feathered composites out."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from PIL import Image

from musekit.io.images import pil_to_tensor

logger = logging.getLogger(__name__)


def image_to_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """PIL image or (3, H, W) / (1, 3, H, W) float tensor in [0, 1] -> (1, 3, H, W) float32."""
    if isinstance(image, Image.Image):
        return pil_to_tensor(image).unsqueeze(0)
    if not torch.is_tensor(image):
        raise TypeError("image must be a PIL image or a tensor")
    tensor = image.float()
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[:2] != (1, 3):
        raise ValueError(f"image tensor must be (3, H, W) or (1, 3, H, W); got {tuple(image.shape)}")
    return tensor.clamp(0, 1)


def mask_to_tensor(mask: Image.Image | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask (white = repaint, black = keep) -> (1, 1, H, W) bool. It must have the image's size (W, H)."""
    if isinstance(mask, Image.Image):
        if mask.mode not in ("L", "1"):
            raise ValueError(f"mask must be a grayscale (L) or black-and-white (1) image, got mode {mask.mode}")
        if mask.size != size:
            raise ValueError(f"mask size {mask.size} differs from the image size {size}")
        tensor = pil_to_tensor(mask.convert("RGB"))[:1].unsqueeze(0)
    elif torch.is_tensor(mask):
        tensor = mask.float()
        while tensor.ndim < 4:
            tensor = tensor.unsqueeze(0)
        if tuple(tensor.shape[-2:]) != (size[1], size[0]):
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from the image size {size}")
    else:
        raise TypeError("mask must be a PIL image or a tensor")
    return tensor > 0.5


def resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of (B, C, H, W) to ``size`` (a side, or (height, width)); unchanged if equal."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def fit_to_model(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (1, 3, H, W) to the model's square size, warning when that changes it."""
    if tuple(image.shape[-2:]) != (size, size):
        logger.warning("the %dx%d image is processed at the model's %dx%d (the result is resized back)",
                       image.shape[-1], image.shape[-2], size, size)  # fmt: skip
    return resize(image, size)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, H, W) bool -> (B, 1, size, size) bool: a pixel is set where any pixel it covers is, so a thin stroke
    survives a downscale (nearest sampling would skip it); nearest when enlarging."""
    scaled = mask.float()
    if mask.shape[-2] > size or mask.shape[-1] > size:
        scaled = F.adaptive_max_pool2d(scaled, (min(size, mask.shape[-2]), min(size, mask.shape[-1])))
    return F.interpolate(scaled, size=(size, size), mode="nearest") > 0


def token_mask(pixel_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 1, H, W) bool -> (B, grid, grid) bool: every token the mask touches (after resizing to grid cells)."""
    soft = F.adaptive_max_pool2d(pixel_mask.float(), (grid, grid)) if pixel_mask.shape[-1] >= grid else None
    if soft is None:
        soft = F.interpolate(pixel_mask.float(), size=(grid, grid), mode="nearest")
    return soft[:, 0] > 0


def scale_region(region: torch.Tensor, size: tuple[int, int], grow: int = 0) -> torch.Tensor:
    """(B, h, w) bool token region -> (B, H, W) bool at another grid or pixel ``size`` (nearest), grown first by
    ``grow`` tokens in every direction (diagonals included)."""
    scaled = region.float().unsqueeze(1)
    if grow > 0:
        scaled = F.max_pool2d(scaled, 2 * grow + 1, stride=1, padding=grow)
    return F.interpolate(scaled, size=size, mode="nearest")[:, 0] > 0


def feathered_alpha(pixel_mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 1, H, W) bool -> float alpha by depth into the mask: 0 outside (exactly), 1 / (radius + 1) on the mask's
    edge pixels, rising linearly to 1 at ``radius`` px inside. Every mask pixel gets some of the new image, however
    thin the mask (a 1 px stroke, a 1 px outpainted strip). Only the mask's edges inside the image ramp: where the
    mask meets the image border it continues beyond it (an outpainted strip is opaque up to the border)."""
    mask = pixel_mask.float()
    if radius <= 0:
        return mask
    depth = mask.clone()
    for k in range(1, radius + 1):  # erosion by a (2k+1)^2 square: the pixels at least k px inside
        depth += -F.max_pool2d(-F.pad(mask, (k,) * 4, mode="replicate"), 2 * k + 1, stride=1)
    return depth / (radius + 1)


def composite(original: torch.Tensor, generated: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """original * (1 - alpha) + generated * alpha, with pixels where alpha == 0 copied exactly."""
    blended = original * (1 - alpha) + generated * alpha
    return torch.where(alpha > 0, blended, original)
