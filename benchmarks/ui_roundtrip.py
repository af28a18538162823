"""The web UI's round trips: the page served for real and driven by gradio's client, against the same calls made
directly on the pipeline (what the UI adds), plus how many progress updates a generate call reports.

Usage: python benchmarks/ui_roundtrip.py [--threads 2] [--repeats 3]
Generate (4 images, seed 0) and learn a concept (5 bullseye renders, superclass "red circle", the default steps).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import gradio_client

    from musekit import MusePipeline
    from musekit.data.concepts import concept_examples
    from musekit.ui import Studio
    from musekit.ui.app import serve

    prompt = "a small yellow star at the top left on a gray background"
    folder = Path(tempfile.mkdtemp(prefix="musekit-ui-bench-"))
    pipe = MusePipeline.from_pretrained()
    studio = Studio(pipe, concept_dir=folder / "concepts")
    app = serve(studio, port=None, block=False)
    client = gradio_client.Client(app.local_url, verbose=False)
    args_generate = (prompt, "", 0, 4, 0, 2.0, [], [], 0.8, 0.15, "local")
    try:
        direct, served = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            studio.generate(prompt, seed=0, num_images=4)
            direct.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.predict(*args_generate, api_name="/generate")
            served.append(time.perf_counter() - start)
        print(f"generate 4 images: direct {statistics.median(direct):.2f} s, through the page "
              f"{statistics.median(served):.2f} s (medians of {args.repeats})")  # fmt: skip

        job = client.submit(*args_generate, api_name="/generate")
        updates = set()
        while not job.done():
            status = job.status()
            if status.progress_data:
                updates.add(tuple((p.desc, p.index) for p in status.progress_data))
            time.sleep(0.02)
        print(f"progress updates seen during one generate call: {len(updates)}")

        shots = []
        for i, (image, _, _) in enumerate(concept_examples("bullseye", 5)):
            shots.append(folder / f"shot{i}.png")
            image.save(shots[-1])
        start = time.perf_counter()
        _, text, _ = client.predict([gradio_client.handle_file(str(p)) for p in shots], "<bull>", "red circle", 0,
                                    "local", 0, [], api_name="/learn")  # fmt: skip
        print(f"learn a concept through the page: {time.perf_counter() - start:.1f} s ({text})")
    finally:
        app.close()


if __name__ == "__main__":
    main()
