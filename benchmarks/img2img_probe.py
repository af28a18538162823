"""Image-to-image across strengths, read by the checker: does the result follow the prompt, keep the rest, and stay
one clean scene (not a patchwork of old and new tokens)?

Cases: one-object validation scenes (plain backgrounds), rendered at the model's size; the prompt changes the object's
colour, its shape, or the background (in turn). For each strength:
- follows: the changed attribute is read as the prompt's;
- kept: the position and the two unchanged attributes are read as the source's;
- clean: one object is read, and its colour, shape and the background each as the source's or the prompt's value.
With --same-prompt the prompt is the source's own caption (a variation): "follows" and "kept" then read, between
them, every attribute as the source's, and the share of base tokens that changed shows how far the image moved.

Usage: python benchmarks/img2img_probe.py [--num 48] [--strengths 0.2,0.4,0.6,0.8] [--guidance-times-strength]
(runs on whatever ``musekit`` is imported: PYTHONPATH=/path/to/other/checkout/src compares another version).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import Example
from musekit.eval.checker import load_checker
from musekit.eval.edit_eval import IMG2IMG_CHANGES, changed, img2img_verdict, one_object_scenes, read_values
from musekit.pipeline import MusePipeline


def img2img_start_ids(pipe, image: torch.Tensor) -> torch.Tensor:
    """The base tokens of the input image, as image-to-image starts from them."""
    from musekit.editing.inpaint import encode_stages

    return encode_stages(pipe, image)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--num", type=int, default=48)
    parser.add_argument("--strengths", default="0.2,0.4,0.6,0.8")
    parser.add_argument("--guidance-times-strength", action="store_true",
                        help="pass guidance_scale = the model's scale x strength")  # fmt: skip
    parser.add_argument("--same-prompt", action="store_true", help="prompt each source's own caption")
    parser.add_argument("--jitter", type=float, default=1.0, help="rendering noise of the sources (0: drawn exactly)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default=None, help="write a grid PNG of the first 6 cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    checker = load_checker()
    scenes = [replace(s, jitter=tuple(j * args.jitter for j in s.jitter)) for s in one_object_scenes(args.num, 0)]
    size = pipe.image_size
    strengths = [float(s) for s in args.strengths.split(",")]
    grid = []
    for strength in strengths:
        follows = kept = clean = 0
        moved = 0.0
        seconds = 0.0
        outs = []
        for k, scene in enumerate(scenes):
            kind = IMG2IMG_CHANGES[k % 3]
            target = scene if args.same_prompt else changed(scene, k, kind)
            image = to_float(render_examples([Example(scene, scene.canonical_caption())], size))
            extra = {"guidance_scale": pipe.config.guidance_scale * strength} if args.guidance_times_strength else {}
            began = time.perf_counter()
            result = pipe.img2img(image, target.canonical_caption(), strength=strength, output_type="pt",
                                  generator=torch.Generator().manual_seed(k), **extra)  # fmt: skip
            seconds += time.perf_counter() - began
            out = result.images
            moved += (result.base_ids != img2img_start_ids(pipe, image)).float().mean().item()
            outs.append(out)
            verdict = img2img_verdict(read_values(checker.predict(out)), scene, target, kind)
            follows, kept, clean = follows + verdict["follows"], kept + verdict["kept"], clean + verdict["clean"]
        n = len(scenes)
        grid.append(torch.cat(outs[:6]))
        print(f"strength {strength}: follows {follows / n:.1%}, kept {kept / n:.1%}, clean {clean / n:.1%}, "
              f"base tokens changed {moved / n:.1%}, {seconds / n:.2f} s per image", flush=True)  # fmt: skip
    if args.save:
        from musekit.io.images import tensor_to_pil

        sources = to_float(render_examples([Example(s, s.canonical_caption()) for s in scenes[:6]], size))
        rows = torch.stack([sources, *grid])  # (1 + strengths, 6, 3, S, S)
        sheet = rows.permute(2, 0, 3, 1, 4).reshape(1, 3, rows.shape[0] * size, 6 * size)
        tensor_to_pil(sheet)[0].save(args.save)


if __name__ == "__main__":
    main()
