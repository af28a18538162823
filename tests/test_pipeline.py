import json

import numpy as np
import pytest
import torch
from PIL import Image

from musekit import MusePipeline
from musekit.config import SuperResConfig, TransformerConfig

from .conftest import seeded

PROMPT = "a large red circle in the center on a blue background"


def test_same_seed_same_ids_different_seed_different_ids(tiny_pipe):
    a = tiny_pipe(PROMPT, generator=seeded(0), output_type="ids").ids
    b = tiny_pipe(PROMPT, generator=seeded(0), output_type="ids").ids
    c = tiny_pipe(PROMPT, generator=seeded(1), output_type="ids").ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_output_types_and_shapes(tiny_pipe):
    size = tiny_pipe.image_size
    assert size == 16 and tiny_pipe.base_image_size == 8
    pil = tiny_pipe(PROMPT, generator=seeded(0), num_images_per_prompt=2).images
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (size, size)
    arr = tiny_pipe(PROMPT, generator=seeded(0), output_type="np").images
    assert isinstance(arr, np.ndarray) and arr.shape == (1, size, size, 3)
    out = tiny_pipe([PROMPT, "a green star"], generator=seeded(0), output_type="pt")
    assert out.images.shape == (2, 3, size, size) and out.images.min() >= 0 and out.images.max() <= 1
    assert out.ids.shape == (2, 8, 8) and out.base_ids.shape == (2, 4, 4)
    mask_id = tiny_pipe.transformer.config.mask_token_id
    assert (out.ids != mask_id).all() and (out.base_ids != mask_id).all()
    images, ids = tiny_pipe(PROMPT, generator=seeded(0), return_dict=False)
    assert len(images) == 1 and ids.shape == (1, 8, 8)


def test_save_load_round_trip_gives_identical_outputs(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m")
    loaded = MusePipeline.from_pretrained(tmp_path / "m")
    loaded.progress_bar = False
    a = tiny_pipe(PROMPT, generator=seeded(5), output_type="pt")
    b = loaded(PROMPT, generator=seeded(5), output_type="pt")
    assert torch.equal(a.ids, b.ids) and torch.equal(a.images, b.images)
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["components"]["superres"] == "superres"


def test_fp16_storage_loads_back_as_fp32(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m16", dtype=torch.float16)
    loaded = MusePipeline.from_pretrained(tmp_path / "m16")
    assert next(loaded.transformer.parameters()).dtype == torch.float32


def test_negative_prompt_and_guidance_change_the_result(tiny_pipe):
    # A random tiny model barely listens to text; a large scale amplifies the (real) text dependence. The base
    # stage is the one guidance_scale and the negative prompt steer (the random tiny SR stage hardly depends on its
    # low-resolution tokens, so its ids can coincide).
    plain = tiny_pipe(PROMPT, generator=seeded(0), guidance_scale=500.0, output_type="ids").base_ids
    negative = tiny_pipe(PROMPT, negative_prompt="a green star", guidance_scale=500.0, generator=seeded(0))
    unguided = tiny_pipe(PROMPT, generator=seeded(0), guidance_scale=1.0, output_type="ids").base_ids
    assert not torch.equal(plain, negative.base_ids)
    assert not torch.equal(plain, unguided)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_guidance_schedule_reaches_the_sampler(tiny_pipe, monkeypatch, schedule):
    import musekit.sampling.sampler as sampler

    scales = []
    original = sampler.apply_guidance
    monkeypatch.setattr(sampler, "apply_guidance", lambda u, c, s: scales.append(s) or original(u, c, s))
    tiny_pipe(PROMPT, generator=seeded(0), num_inference_steps=5, guidance_scale=5.0, sr_guidance_scale=3.0,
              guidance_schedule=schedule, output_type="ids")  # fmt: skip
    if schedule == "constant":
        assert scales[:5] == [5.0] * 5
    else:
        assert scales[:5] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert len(scales) == 5 + tiny_pipe.config.sr_inference_steps


def test_text_keys_and_values_are_computed_once_per_call(tiny_pipe):
    calls = {"k": 0, "v": 0}
    for model in (tiny_pipe.transformer, tiny_pipe.superres):
        for attn in model.cross_attentions:
            attn.to_k.register_forward_hook(lambda *_: calls.__setitem__("k", calls["k"] + 1))
            attn.to_v.register_forward_hook(lambda *_: calls.__setitem__("v", calls["v"] + 1))
    tiny_pipe(PROMPT, num_inference_steps=6, sr_inference_steps=3, generator=seeded(0), output_type="ids")
    layers = len(tiny_pipe.transformer.blocks) + len(tiny_pipe.superres.blocks)
    assert calls == {"k": layers, "v": layers}


def test_base_only_pipeline(tiny_text_encoder):
    pipe = MusePipeline.from_configs(tiny_text_encoder, superres=None)
    pipe.progress_bar = False
    out = pipe(PROMPT, generator=seeded(0), output_type="pt")
    assert out.images.shape[-1] == pipe.base_image_size and torch.equal(out.ids, out.base_ids)


def test_bad_arguments_are_clear_errors(tiny_pipe):
    with pytest.raises(ValueError, match="empty"):
        tiny_pipe("   ")
    with pytest.raises(TypeError):
        tiny_pipe([])
    with pytest.raises(ValueError, match="steps"):
        tiny_pipe(PROMPT, num_inference_steps=0)
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipe(PROMPT, output_type="jpeg")
    with pytest.raises(ValueError, match="guidance_schedule"):
        tiny_pipe(PROMPT, guidance_schedule="cosine")
    with pytest.raises(ValueError, match="negative prompts"):
        tiny_pipe([PROMPT, PROMPT], negative_prompt=["x"])


def test_incompatible_components_are_rejected(tiny_text_encoder):
    with pytest.raises(ValueError, match="codebook"):
        MusePipeline(
            tiny_text_encoder,
            MusePipeline.from_configs(tiny_text_encoder).vqgan,
            __import__("musekit").models.MaskedTransformer(TransformerConfig.preset("tiny").replace(codebook_size=32)),
        )
    pipe = MusePipeline.from_configs(tiny_text_encoder)
    sr = __import__("musekit").models.SuperResTransformer(SuperResConfig.preset("tiny").replace(cond_grid_size=2))
    with pytest.raises(ValueError, match="super-resolution"):
        MusePipeline(tiny_text_encoder, pipe.vqgan, pipe.transformer, sr)


def test_missing_or_invalid_model_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        MusePipeline.from_pretrained(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="model_index"):
        MusePipeline.from_pretrained(tmp_path)


def test_sr_strength_starts_the_sr_stage_from_the_upsampled_base_image(tiny_pipe):
    run = lambda **kw: tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="ids", **kw)  # noqa: E731
    full = run()
    assert torch.equal(run(sr_strength=1.0).ids, full.ids)  # 1: every SR token decoded (Muse)
    zero = run(sr_strength=0.0)
    expected = tiny_pipe.sr_start_ids(zero.base_ids, 0.0, None)
    assert torch.equal(zero.ids, expected)  # 0: the upsampled base image, re-tokenized, as it is
    half = tiny_pipe.sr_start_ids(zero.base_ids, 0.5, torch.Generator().manual_seed(0))
    masked = (half == tiny_pipe.superres.config.mask_token_id).float().mean().item()
    assert masked == pytest.approx(0.5, abs=1 / half[0].numel())
    with pytest.raises(ValueError, match="sr_strength"):
        run(sr_strength=1.5)


def two_tokenizer_pipe(text_encoder) -> MusePipeline:
    """A base stage with a tokenizer of its own (patch encoder, 12 codes); the SR stage keeps the tiny tokenizer and
    is conditioned on base images re-tokenized by it (16 codes)."""
    from musekit.config import VQConfig
    from musekit.models import MaskedTransformer, SuperResTransformer
    from musekit.tokenizer import VQModel

    torch.manual_seed(3)
    base_vq = VQModel(VQConfig.preset("tiny").replace(encoder="patch", channel_mult=(1,), stem_unshuffle=2,
                                                      codebook_size=12))  # fmt: skip
    sr_vq = VQModel(VQConfig.preset("tiny"))
    width = text_encoder.hidden_size
    base = MaskedTransformer(TransformerConfig.preset("tiny").replace(codebook_size=12, text_dim=width))
    sr = SuperResTransformer(SuperResConfig.preset("tiny").replace(text_dim=width, cond_codebook_size=16))
    pipe = MusePipeline(text_encoder, base_vq, base, sr, sr_vq)
    pipe.progress_bar = False
    return pipe


def test_a_base_tokenizer_of_its_own_conditions_sr_on_retokenized_images(tiny_text_encoder, tmp_path):
    pipe = two_tokenizer_pipe(tiny_text_encoder)
    assert not pipe.sr_conditions_on_base_ids and pipe.image_size == 16 and pipe.base_image_size == 8
    out = pipe(PROMPT, generator=seeded(0), output_type="pt")
    assert out.base_ids.max() < 12 and out.ids.shape == (1, 8, 8) and out.images.shape == (1, 3, 16, 16)
    cond = pipe.sr_cond_ids(out.base_ids)
    assert torch.equal(cond, pipe.vqgan_sr.encode(pipe.vqgan.decode(out.base_ids)))
    assert cond.shape == out.base_ids.shape and cond.max() < 16
    again = MusePipeline.from_pretrained(pipe.save_pretrained(tmp_path / "m"))
    again.progress_bar = False
    assert torch.equal(again(PROMPT, generator=seeded(0), output_type="ids").ids, out.ids)
    inpainted = pipe.inpaint(out.images[0], torch.ones(16, 16), PROMPT, generator=seeded(1), output_type="pt")
    assert inpainted.images.shape == (1, 3, 16, 16)


def test_sr_conditioned_on_a_third_codebook_is_refused(tiny_text_encoder):
    pipe = two_tokenizer_pipe(tiny_text_encoder)
    sr = type(pipe.superres)(pipe.superres.config.replace(cond_codebook_size=13))
    with pytest.raises(ValueError, match="conditioned on neither"):
        MusePipeline(pipe.text_encoder, pipe.vqgan, pipe.transformer, sr, pipe.vqgan_sr)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number >= 0"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number >= 0"),
        ({"temperature": (float("nan"), 0.0)}, "temperature must be finite and >= 0"),
        ({"concepts": ["x.safetensors"], "concept_bias": float("nan")}, "concept_bias must be a finite number"),
        ({"concepts": ["x.safetensors"], "concept_temperature": float("inf")}, "concept_temperature must be a finite"),
    ],
)
def test_non_finite_settings_are_refused(tiny_pipe, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        tiny_pipe("a red circle", num_inference_steps=1, output_type="ids", **kwargs)
