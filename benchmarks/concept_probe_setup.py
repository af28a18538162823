"""What the personalization probes share (concept_lr_probe.py, concept_recipe_probe.py, two_concept_probe.py): the
bundled pipeline and checker, the evaluation concepts' images and reference embeddings, and learning a concept as
`musekit eval personalize` does (local variant, per-image captions), optionally cached as a concept file."""

from __future__ import annotations

from pathlib import Path

import torch

from musekit.data.concepts import CONCEPTS, concept_examples
from musekit.eval.checker import load_checker
from musekit.eval.personalize_eval import concept_references
from musekit.personalize.concept import Concept
from musekit.personalize.trainer import PersonalizeConfig
from musekit.pipeline import MusePipeline


def load_pipeline_and_checker(threads: int, device: str = "cpu"):
    """The bundled pipeline (no progress bars) on ``device`` and the shapes checker (CPU), on ``threads`` CPU
    threads."""
    torch.set_num_threads(threads)
    pipe = MusePipeline.from_pretrained(device=device)
    pipe.progress_bar = False
    return pipe, load_checker()


def examples_and_references(pipe, checker, names: list[str]) -> tuple[dict, dict]:
    """Per concept name, its 5 training images (``concept_examples`` rows, seed 0) and their reference embeddings."""
    examples = {name: concept_examples(name, 5, pipe.image_size, 0) for name in names}
    return examples, {name: concept_references(checker, rows) for name, rows in examples.items()}


def learn(pipe, name: str, examples: list, config: PersonalizeConfig, superclass: str | None = None) -> Concept:
    """Learn concept ``name`` from its ``examples`` with their captions (superclass: the concept's own by default)."""
    images = [image for image, _, _ in examples]
    captions = [caption for _, _, caption in examples]
    return pipe.learn_concept(images, f"<{name}>", superclass or CONCEPTS[name]["superclass"], config=config,
                              progress=False, captions=captions)  # fmt: skip


def cached(pipe, name: str, examples: list, path: Path, config: PersonalizeConfig) -> tuple[Concept, bool]:
    """The concept file at ``path`` if it exists, else ``learn`` it and save it there; and whether it was learned.
    The file is reused whatever ``config`` is now: learn under another config into another cache folder."""
    if path.is_file():
        return Concept.load(path), False
    concept = learn(pipe, name, examples, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    concept.save(path)
    return concept, True
