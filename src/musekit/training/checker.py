"""Train the shapes-world checker on renders (a few minutes on CPU) and measure it on held-out renders."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from musekit.config import CheckerConfig
from musekit.data.renders import labels_of, render_examples, render_split, to_float
from musekit.data.shapes import ShapesWorld
from musekit.eval.checker import ShapeChecker, attribute_accuracy, checker_loss
from musekit.io.checkpoint import atomic_write_text, save_component

logger = logging.getLogger(__name__)

CHECKER_WORLD_SEED = 1000  # the checker trains on other scenes than the ones it later judges (world seed 0)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild noise and blur so the checker reads VQ reconstructions and generated images as well as renders."""
    b = images.shape[0]
    noise = torch.randn(images.shape, generator=generator) * torch.rand(b, 1, 1, 1, generator=generator) * 0.04
    out = images + noise
    blur = torch.rand(b, generator=generator) < 0.3
    if blur.any():
        size = images.shape[-1]
        small = F.interpolate(out[blur], scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
        out[blur] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)


def training_pool(count: int, size: int, progress: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Renders of every kind of scene, held-out pairs included (the checker judges those too)."""
    world = ShapesWorld(CHECKER_WORLD_SEED)
    examples = (
        world.examples("train", int(count * 0.7))
        + world.examples("heldout", int(count * 0.15))
        + world.examples("heldout2", count - int(count * 0.7) - int(count * 0.15))
    )
    return render_examples(examples, size, progress), labels_of(examples)


def evaluate_checker(checker: ShapeChecker, count: int = 1000, size: int = 128) -> dict[str, dict[str, float]]:
    """Per-attribute accuracy on renders of world seed 0 splits (scenes the checker never saw)."""
    world = ShapesWorld(0)
    checker.eval()
    report = {}
    for split in ("val", "heldout", "heldout2"):
        images, labels, _ = render_split(world, split, count, size)
        report[split] = attribute_accuracy(checker.predict(to_float(images)), labels)
    return report


def train_checker(
    out_dir: str | Path,
    steps: int = 3000,
    batch_size: int = 128,
    pool_size: int = 30000,
    lr: float = 2e-3,
    seed: int = 0,
    config: CheckerConfig | None = None,
    progress: bool = True,
) -> dict:
    """Train, evaluate and save the checker to ``out_dir`` (component folder + ``report.json``)."""
    config = config or CheckerConfig()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    images, labels = training_pool(pool_size, config.image_size, progress)
    checker = ShapeChecker(config)
    optimizer = torch.optim.AdamW(checker.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    bar = tqdm(range(steps), desc="checker", disable=not progress)
    for _ in bar:
        index = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        batch = augment(to_float(images[index]), generator)
        loss = checker_loss(checker(batch), {k: v[index] for k, v in labels.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    train_seconds = time.perf_counter() - start
    report = {"train_seconds": round(train_seconds, 1), "steps": steps, "pool_size": pool_size,
              "accuracy": evaluate_checker(checker)}  # fmt: skip
    out = Path(out_dir)
    save_component(checker, config, out, dtype=torch.float16)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report
