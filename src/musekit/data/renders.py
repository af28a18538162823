"""Render batches of shapes-world examples to tensors (with labels), for the checker and the tokenizer."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from musekit.data.drawing import object_coverage, render
from musekit.data.shapes import LABEL_SPACES, Example, ShapesWorld, scene_labels


def render_examples(examples: list[Example], size: int, progress: bool = False) -> torch.Tensor:
    """(N, 3, size, size) uint8 renders."""
    out = np.empty((len(examples), size, size, 3), dtype=np.uint8)
    for i, ex in enumerate(tqdm(examples, desc=f"render {size}px", disable=not progress, leave=False)):
        out[i] = np.asarray(render(ex.scene, size))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def object_token_coverage(examples: list[Example], image_size: int, grid: int, progress: bool = False) -> torch.Tensor:
    """(N, grid, grid) float32: the fraction of each token's pixels (at ``image_size``) that an object covers."""
    out = np.empty((len(examples), image_size, image_size), dtype=np.float32)
    for i, ex in enumerate(tqdm(examples, desc="object masks", disable=not progress, leave=False)):
        out[i] = object_coverage(ex.scene, image_size)
    return torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(out).unsqueeze(1), grid).squeeze(1)


def labels_of(examples: list[Example]) -> dict[str, torch.Tensor]:
    """Attribute name -> (N,) int64 labels (``IGNORE`` where not applicable)."""
    rows = [scene_labels(ex.scene) for ex in examples]
    return {name: torch.tensor([r[name] for r in rows], dtype=torch.long) for name in LABEL_SPACES}


def render_split(
    world: ShapesWorld, split: str, count: int, size: int, start: int = 0, progress: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """Render ``count`` examples of ``split``: (uint8 images, labels, captions)."""
    examples = world.examples(split, count, start)
    return render_examples(examples, size, progress), labels_of(examples), [e.caption for e in examples]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [0, 1]."""
    return images.float() / 255.0
