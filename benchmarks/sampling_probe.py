"""Checker accuracy of a model folder's images on held-out prompts under several sampling settings (quick probe).

Usage: python benchmarks/sampling_probe.py MODEL_DIR '{"sr_strength": 0.5}' ... [--num 16] [--batch 8] [--base-only]
[--split heldout] [--canonical] [--start 0]
Each JSON argument is a set of keyword arguments for the pipeline call, plus optionally SchedulerConfig fields
(e.g. '{"mask_schedule": "pow", "schedule_power": 0.5}'); --base-only decodes the base tokens (64 px).
--canonical prompts the canonical caption of each scene (as `musekit eval shapes` does) instead of the split's own.
Prints per-attribute accuracy, full-prompt accuracy for one- and two-object scenes, and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from musekit.config import SchedulerConfig
from musekit.data.renders import labels_of
from musekit.data.shapes import ShapesWorld
from musekit.eval.checker import attribute_accuracy, load_checker
from musekit.eval.shapes_eval import ONE_OBJECT, TWO_OBJECT
from musekit.pipeline import MusePipeline
from musekit.sampling.options import SamplingOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("settings", nargs="*", default=["{}"])
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-only", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", default="heldout", help="shapes-world split of the prompts (heldout, val, ...)")
    parser.add_argument("--canonical", action="store_true", help="prompt each scene's canonical caption")
    parser.add_argument("--start", type=int, default=0, help="index of the first example of the split")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    checker = load_checker()
    examples = ShapesWorld(0).examples(args.split, args.num, args.start)
    captions = [e.scene.canonical_caption() if args.canonical else e.caption for e in examples]
    labels = labels_of(examples)
    two = torch.tensor([e.scene.relation is not None for e in examples])
    default_scheduler = pipe.scheduler_config
    scheduler_keys = set(SchedulerConfig.__dataclass_fields__) - {"temperature"}  # a call keyword too
    for setting in map(json.loads, args.settings):
        label = dict(setting)
        scheduler = {k: setting.pop(k) for k in list(setting) if k in scheduler_keys}
        pipe.scheduler_config = default_scheduler.replace(**scheduler)
        images = []
        began = time.perf_counter()
        for start in range(0, args.num, args.batch):
            prompts = captions[start : start + args.batch]
            generator = torch.Generator().manual_seed(start)
            if args.base_only:
                text = pipe.encode_prompt(prompts)
                options = SamplingOptions.resolve(pipe.config, **setting)
                ids = pipe.generate_tokens(pipe.transformer, text, len(prompts), options, generator)
                images.append(pipe.vqgan.decode(ids))
            else:
                images.append(pipe(prompts, generator=generator, output_type="pt", **setting).images)
        seconds = (time.perf_counter() - began) / args.num
        predicted = checker.predict(torch.cat(images))
        accuracy = attribute_accuracy(predicted, labels)
        full = {}
        for kind, rows, names in (("one", ~two, ONE_OBJECT), ("two", two, TWO_OBJECT)):
            if rows.any():
                right = torch.stack([predicted[n][rows] == labels[n][rows] for n in names]).all(0)
                full[f"full_{kind}"] = f"{right.float().mean().item():.3f} of {int(rows.sum())}"
        print(label, {k: round(v, 3) for k, v in accuracy.items()}, full, f"{seconds:.3f} s/image", flush=True)


if __name__ == "__main__":
    main()
