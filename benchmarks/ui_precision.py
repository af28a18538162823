"""Seconds for the web UI's Generate button (``Studio.generate``, 4 images) with the bundled model in fp32 and in
the CPU fast paths of `musekit ui --int8` / `--int8 all` (best of 3 after a warm-up call).

    python benchmarks/ui_precision.py --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from musekit.pipeline import MusePipeline
from musekit.ui import Studio

PROMPT = "a small yellow star at the top left on a gray background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("fp32", "int8", "int8-all"):
            pipe = MusePipeline.from_pretrained()
            pipe.progress_bar = False
            if kind != "fp32":
                pipe.quantize(kind)
            studio = Studio(pipe, concept_dir=folder)
            studio.generate(PROMPT, seed=0, num_images=1)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                studio.generate(PROMPT, seed=3, num_images=4)
                times.append(time.perf_counter() - start)
            print(f"{kind}: {min(times):.2f} s for 4 images (best of {args.repeats})", flush=True)


if __name__ == "__main__":
    main()
