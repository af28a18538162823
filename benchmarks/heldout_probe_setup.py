"""What the held-out shape probes share (``binding_probe.py``, ``emphasis_probe.py``): their command line, the
bundled pipeline and checker, and the shape and colour counts of generated held-out scenes.

Scenes are held-out dev scenes (index 1000 on by default, not the evaluation prompts), generated in batches of 8
seeded with their first index, as ``sampling_probe.py`` does.
"""

from __future__ import annotations

import argparse

import torch

from musekit.data.renders import labels_of
from musekit.data.shapes import ShapesWorld
from musekit.eval.checker import load_checker
from musekit.pipeline import MusePipeline


def parse_probe_args(doc: str, add_settings) -> argparse.Namespace:
    """The probe's arguments: its own settings (``add_settings(parser)``) and --num, --start, --threads (applied)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_settings(parser)
    parser.add_argument("--num", type=int, default=240)
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def load_probe(args: argparse.Namespace):
    """(bundled pipeline without progress bars, checker, the held-out scenes ``args`` name)."""
    pipe = MusePipeline.from_pretrained()
    pipe.progress_bar = False
    return pipe, load_checker(), ShapesWorld(0).examples("heldout", args.num, args.start)


def shape_and_colour_hits(pipe, checker, scenes, captions: list[str]) -> tuple[int, int]:
    """How many of ``scenes``' images, generated from ``captions``, the checker reads with the right shape and the
    right colour."""
    shape = color = 0
    for start in range(0, len(scenes), 8):
        images = pipe(captions[start : start + 8], generator=torch.Generator().manual_seed(start),
                      output_type="pt").images  # fmt: skip
        predicted, labels = checker.predict(images), labels_of(scenes[start : start + 8])
        shape += int((predicted["shape"] == labels["shape"]).sum())
        color += int((predicted["color"] == labels["color"]).sum())
    return shape, color
