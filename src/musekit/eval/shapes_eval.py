"""`musekit eval shapes`: generate for held-out and paraphrase prompts, read the images with the checker.

Reports per-attribute accuracy, full-prompt accuracy, FSD (Frechet distance on checker features between generated
images and renders of the same scenes), tokenizer PSNR and checker readability of reconstructions, seconds per image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from musekit.data.renders import labels_of, render_examples, to_float
from musekit.data.shapes import LABEL_SPACES, Example, ShapesWorld
from musekit.eval.checker import ShapeChecker, attribute_accuracy
from musekit.eval.metrics import frechet_distance, psnr
from musekit.pipeline import MusePipeline

ONE_OBJECT = ("color", "shape", "position", "size", "background")
TWO_OBJECT = ("color", "shape", "color2", "shape2", "relation", "background")


@dataclass(frozen=True)
class EvalSettings:
    num_prompts: int = 200  # per split
    seed: int = 0
    batch_size: int = 8
    num_inference_steps: int | None = None
    sr_inference_steps: int | None = None
    guidance_scale: float | None = None
    top_k: int | None = None


def misses(examples: list[Example], pred: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], names) -> list:
    """The prompts not fully right: their caption and what the checker read instead, per wrong attribute."""
    out = []
    for i, example in enumerate(examples):
        wrong = {n: LABEL_SPACES[n][int(pred[n][i])] for n in names if int(pred[n][i]) != int(labels[n][i])}
        if wrong:
            out.append({"prompt": example.caption, "read": wrong})
    return out


def shape_by_size(pred: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Shape accuracy per object size (small objects are where shape is lost)."""
    out = {}
    for index, size in enumerate(LABEL_SPACES["size"]):
        rows = labels["size"] == index
        if rows.any():
            out[size] = (pred["shape"][rows] == labels["shape"][rows]).float().mean().item()
    return out


def full_accuracy(pred: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], names: tuple[str, ...]) -> float:
    right = torch.ones_like(labels[names[0]], dtype=torch.bool)
    for name in names:
        right &= pred[name] == labels[name]
    return right.float().mean().item()


@torch.no_grad()
def generate_for(pipe: MusePipeline, examples: list[Example], settings: EvalSettings, progress: bool) -> torch.Tensor:
    """Images (N, 3, S, S) for the examples' captions; batch k uses generator seed ``seed + k`` (reproducible)."""
    out = []
    starts = range(0, len(examples), settings.batch_size)
    for k, start in enumerate(tqdm(starts, desc="generate", disable=not progress, leave=False)):
        prompts = [e.caption for e in examples[start : start + settings.batch_size]]
        result = pipe(
            prompts,
            num_inference_steps=settings.num_inference_steps,
            sr_inference_steps=settings.sr_inference_steps,
            guidance_scale=settings.guidance_scale,
            top_k=settings.top_k,
            generator=torch.Generator().manual_seed(settings.seed + k),
            output_type="pt",
        )
        out.append(result.images)
    return torch.cat(out)


@torch.no_grad()
def tokenizer_report(pipe: MusePipeline, checker: ShapeChecker, world: ShapesWorld, count: int) -> dict:
    """PSNR of VQ reconstructions of held-out renders at both stage resolutions, and the checker on them; when the
    base transformer predicts a subset of the codebook, also the base reconstructions with that subset."""
    examples = world.examples("heldout", count // 2) + world.examples("heldout2", count - count // 2)
    labels = labels_of(examples)
    full = to_float(render_examples(examples, pipe.image_size))
    base = F.interpolate(full, size=(pipe.base_image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
    report = {}
    stages = [("base", base, pipe.vqgan, None), ("final", full, pipe.sr_tokenizer, None)]
    allowed = getattr(pipe.transformer.config, "allowed_codes", ())
    if allowed:
        stages.append(("base_subset", base, pipe.vqgan, torch.tensor(allowed, dtype=torch.long)))
    for name, images, vq, codes in stages:
        recon = torch.cat([vq.decode(vq.encode(images[s : s + 32], codes)) for s in range(0, len(images), 32)])
        report[f"psnr_{name}"] = psnr(recon, images).item()
        report[f"checker_original_{name}"] = attribute_accuracy(checker.predict(images), labels)
        report[f"checker_reconstruction_{name}"] = attribute_accuracy(checker.predict(recon), labels)
    return report


def evaluate_shapes(
    pipe: MusePipeline, checker: ShapeChecker, settings: EvalSettings | None = None, progress: bool = True
) -> tuple[dict, torch.Tensor]:
    """Run the whole evaluation; returns (report, a grid tensor of the first images of each split)."""
    settings = settings or EvalSettings()
    world = ShapesWorld(0)
    pipe.progress_bar = False
    report: dict = {"settings": settings.__dict__, "image_size": pipe.image_size}
    generated_all, renders_all, grid = [], [], []
    seconds, count = 0.0, 0
    for split, names in (("heldout", ONE_OBJECT), ("heldout2", TWO_OBJECT), ("paraphrase", ONE_OBJECT)):
        examples = world.examples(split, settings.num_prompts)
        start = time.perf_counter()
        images = generate_for(pipe, examples, settings, progress)
        seconds += time.perf_counter() - start
        count += len(examples)
        labels = labels_of(examples)
        predicted = checker.predict(images)
        report[split] = {
            "attributes": attribute_accuracy(predicted, labels),
            "full_prompt": full_accuracy(predicted, labels, names),
            "prompts": len(examples),
            "misses": misses(examples, predicted, labels, names),
        }
        if split != "heldout2":
            report[split]["shape_by_size"] = shape_by_size(predicted, labels)
        generated_all.append(images)
        renders_all.append(to_float(render_examples(examples, pipe.image_size)))
        grid.append(images[:8])
    report["fsd"] = frechet_distance(checker.embed(torch.cat(generated_all)), checker.embed(torch.cat(renders_all)))
    report["seconds_per_image"] = seconds / count
    report["tokenizer"] = tokenizer_report(pipe, checker, world, min(400, 2 * settings.num_prompts))
    return report, torch.cat(grid)
