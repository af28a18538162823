"""The bundled default model: loads offline with no arguments and turns a prompt into a 128x128 image."""

import torch

from musekit import MusePipeline
from musekit.pipeline import DEFAULT_MODEL_DIR


def test_bundled_model_loads_and_generates():
    pipe = MusePipeline.from_pretrained()
    pipe.progress_bar = False
    assert pipe.image_size == 128 and pipe.superres is not None
    out = pipe("a large red circle in the center on a blue background", num_inference_steps=2, sr_inference_steps=1,
               generator=torch.Generator().manual_seed(0), output_type="pt")  # fmt: skip
    assert out.images.shape == (1, 3, 128, 128)


def test_bundled_weights_fit_the_budget():
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    checker = sum(p.stat().st_size for p in (DEFAULT_MODEL_DIR.parent / "checker").rglob("*.safetensors"))
    assert total + checker <= 40 * 1024 * 1024
