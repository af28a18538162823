"""The fp16/bf16 fast paths (``musekit.models.half``): precision, graph replay, pipeline wiring, clear errors.

The CUDA tests run only where torch sees a GPU; the rest run everywhere (bf16 runs eagerly on a CPU: about 2x fp32
with native bf16, far slower without it, fine either way on tiny models).
"""

from __future__ import annotations

import pytest
import torch

from musekit.models.half import HalfPrecisionModel, cast_cache
from musekit.models.quantize import logits_fidelity

from .conftest import seeded

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _probe(model, text, batch=2, seed=0):
    side = model.config.grid_size
    ids = torch.randint(0, model.config.codebook_size, (batch, side, side), generator=seeded(seed))
    ids[torch.rand(ids.shape, generator=seeded(seed + 1)) < 0.5] = model.config.mask_token_id
    return ids


def test_half_model_keeps_text_in_fp32_and_returns_fp32_logits(tiny_pipe):
    model = tiny_pipe.transformer
    text = tiny_pipe.text_encoder.encode(["a red circle", "a blue square"])
    fast = HalfPrecisionModel(model, "bf16", cuda_graph=False)
    with torch.no_grad():
        reference_cache = model.precompute(text)
        cache = fast.precompute(text)
        assert all(k.dtype == torch.bfloat16 for k in cache.keys) and cache.mask.dtype == torch.bool
        # the cache is the fp32 one, cast: text keys/values (and Perfusion's edits) are computed in fp32
        assert torch.equal(cache.keys[0], reference_cache.keys[0].to(torch.bfloat16))
        ids = _probe(model, text)
        logits = fast(ids, cache=cache)
        reference = model(ids, cache=reference_cache)
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    assert next(model.parameters()).dtype == torch.float32  # the fp32 model is left as it was
    assert logits_fidelity(reference, logits)["cosine_mean"] > 0.999


def test_half_model_forwards_attributes_and_casts_foreign_caches(tiny_pipe):
    model = tiny_pipe.transformer
    fast = HalfPrecisionModel(model, "bf16", cuda_graph=False)
    assert fast.config is model.config and fast.text_attentions == model.text_attentions
    text = tiny_pipe.text_encoder.encode(["a red circle"])
    with torch.no_grad():
        fp32_cache = model.precompute(text)
        ids = _probe(model, text, batch=1)
        assert torch.equal(fast(ids, cache=fp32_cache), fast(ids, cache=cast_cache(fp32_cache, torch.bfloat16)))
    with pytest.raises(ValueError, match="kind must be one of"):
        HalfPrecisionModel(model, "fp8")


def test_fp16_is_refused_on_cpu(tiny_pipe):
    with pytest.raises(ValueError, match="fp16 is a GPU path"):
        tiny_pipe.quantize("fp16")
    with pytest.raises(ValueError, match="on a CPU, compile applies to the int8 and bf16-linears paths"):
        tiny_pipe.quantize("bf16", compile=True)
    assert tiny_pipe.precision == "fp32"


def test_bf16_on_cpu_generates_close_to_fp32_and_keeps_its_device(tiny_model_dir):
    from musekit.pipeline import MusePipeline

    pipe = MusePipeline.from_pretrained(tiny_model_dir)
    pipe.progress_bar = False
    text = pipe.text_encoder.encode(["a red circle", "a blue square"])
    model = pipe.transformer
    with torch.no_grad():
        cache = model.precompute(text)
        ids = _probe(model, text)
        reference = model(ids, cache=cache)
    pipe.quantize("bf16")
    assert pipe.precision == "bf16" and isinstance(pipe.transformer, HalfPrecisionModel)
    with torch.no_grad():
        logits = pipe.transformer(ids, cache=pipe.transformer.cast(cache))
    assert logits_fidelity(reference, logits)["cosine_mean"] > 0.999
    first = pipe("a red circle", generator=seeded(3), output_type="pt", num_inference_steps=4).images
    again = pipe("a red circle", generator=seeded(3), output_type="pt", num_inference_steps=4).images
    assert torch.equal(first, again) and first.dtype == torch.float32
    # a mask-free edit confined by a source prompt reads attention maps from the fp32 model
    edited = pipe.edit(first[0], "a red circle", source_prompt="a blue square", iterations=2, generator=seeded(0),
                       output_type="pt").images  # fmt: skip
    assert edited.shape == first.shape
    with pytest.raises(ValueError, match="was made for CPU"):
        pipe.to("cuda")


def test_a_quantized_pipeline_stays_on_its_own_device():
    from musekit.pipeline import same_device

    cpu, cuda0, cuda1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)
    assert same_device(cpu, torch.device("cpu")) and same_device(cuda0, torch.device("cuda", 0))
    assert not same_device(cpu, cuda0) and not same_device(cuda0, cuda1)  # a CUDA graph is bound to its GPU
    if not torch.cuda.is_available():  # "cuda" is the current CUDA device (0 where there is none)
        assert same_device(torch.device("cuda"), cuda0) and not same_device(torch.device("cuda"), cuda1)


def test_the_bf16_check_measures_a_positive_speed_ratio():
    from musekit.models.quantize import bf16_speedup

    assert bf16_speedup() > 0 and bf16_speedup() is bf16_speedup()  # measured once per process


def test_cli_half_and_device_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    out = str(tmp_path / "x.png")
    for args, message in (
        (["--half", "fp16"], "--half fp16 is a GPU path"),
        (["--half", "bf16-linears", "--device", "cuda"], "--half bf16-linears is a CPU path"),
        (["--device", "tpu"], "--device"),
        (["--int8", "--half", "fp16", "--device", "cuda"], None),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "musekit", "generate", "a red circle", "--out", out, *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("musekit: error:"), result.stderr
        if message:
            assert message in lines[0]


@cuda
def test_cuda_graph_replay_matches_eager_half_and_is_reused_across_prompts(tiny_pipe):
    pipe = tiny_pipe.to("cuda")
    model = pipe.transformer
    graphed = HalfPrecisionModel(model, "fp16")
    eager = HalfPrecisionModel(model, "fp16", cuda_graph=False)
    with torch.no_grad():
        for prompt in ("a red circle", "a large blue square at the top"):
            text = pipe.text_encoder.encode([prompt, prompt]).to("cuda")
            ids = _probe(model, text).cuda()
            cache = graphed.precompute(text)
            torch.testing.assert_close(graphed(ids, cache=cache), eager(ids, cache=cache), atol=1e-3, rtol=1e-3)
            reference = model(ids, cache=model.precompute(text))
            fidelity = logits_fidelity(reference, graphed(ids, cache=cache))
            assert fidelity["cosine_min"] > 0.999 and fidelity["top1_agreement"] > 0.99
    assert len(graphed._graphs) == 1  # one capture, replayed for the second prompt


@cuda
def test_cuda_pipeline_generates_in_fp32_and_fp16(tiny_pipe):
    cpu = tiny_pipe("a red circle", generator=seeded(3), output_type="pt", num_inference_steps=4).images
    pipe = tiny_pipe.to("cuda")
    gpu = pipe("a red circle", generator=seeded(3), output_type="pt", num_inference_steps=4).images
    assert gpu.shape == cpu.shape and gpu.device.type == "cuda"
    pipe.quantize("fp16")
    assert pipe.precision == "fp16"
    first = pipe("a red circle", generator=seeded(3), output_type="pt", num_inference_steps=4).images
    again = pipe("a red circle", generator=seeded(3), output_type="pt", num_inference_steps=4).images
    assert torch.equal(first, again)  # deterministic with a seeded (CPU) generator
    with pytest.raises(ValueError, match="was made for CUDA"):
        pipe.to("cpu")


def test_bf16_warns_where_this_cpu_multiplies_bf16_slower_than_fp32(tiny_pipe, monkeypatch, caplog):
    import musekit.models.quantize as quantize

    monkeypatch.setattr(quantize, "bf16_speedup", lambda: 0.01)
    with caplog.at_level("WARNING", logger="musekit.models.quantize"):
        tiny_pipe.quantize("bf16")
    assert "bf16 matrix products run 100.0x slower than fp32" in caplog.text and "bf16 will be slower" in caplog.text
    assert tiny_pipe.precision == "bf16"
