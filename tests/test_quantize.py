"""The int8 CPU fast path: what it quantizes, what it leaves alone, how close it stays to fp32."""

import pytest
import torch
from torch import nn

from musekit.models.quantize import Int8Linear, logits_fidelity

from .conftest import seeded


def is_float_linear(module) -> bool:
    return type(module) is nn.Linear


def test_quantize_swaps_only_the_per_step_feed_forward_linears(tiny_pipe):
    fp32 = tiny_pipe.transformer
    tiny_pipe.quantize("int8")
    assert tiny_pipe.precision == "int8"
    fast = tiny_pipe.transformer
    assert fast is not fp32 and is_float_linear(fp32.blocks[0].mlp.fc1)  # the fp32 model is kept, untouched
    for block in fast.blocks:
        assert not is_float_linear(block.mlp.fc1) and not is_float_linear(block.mlp.fc2)
        for name in ("to_q", "to_k", "to_v", "to_out"):  # attention stays fp32 (fidelity; Perfusion edits K/V)
            assert is_float_linear(getattr(block.cross_attn, name))
    assert is_float_linear(fast.text_proj) and is_float_linear(fast.head)
    assert not is_float_linear(tiny_pipe.superres.blocks[0].mlp.fc1)


def test_int8_linear_is_exact_on_representable_values_and_close_otherwise():
    linear = nn.Linear(16, 8)
    with torch.no_grad():  # integer weights with a row maximum of 127: exactly representable per channel
        linear.weight.copy_(torch.randint(-127, 128, (8, 16), generator=seeded(0)).float())
        linear.weight[:, 0] = 127.0
    x = torch.randint(-127, 128, (2, 3, 16), generator=seeded(1)).float()
    x[..., 0] = 127.0  # each token's maximum is 127: the per-token scale is exactly 1
    fast = Int8Linear(linear)
    assert torch.equal(fast(x), linear(x)) and fast(x).shape == (2, 3, 8)
    dense = nn.Linear(64, 32)
    z = torch.randn(10, 64, generator=seeded(3))
    with torch.no_grad():
        error = (Int8Linear(dense)(z) - dense(z)).norm() / dense(z).norm()
    assert error < 0.02


def test_int8_all_scope_swaps_every_per_step_linear_but_not_the_text_path(tiny_pipe):
    tiny_pipe.quantize("int8-all")
    assert tiny_pipe.precision == "int8-all"
    fast = tiny_pipe.transformer
    for block in fast.blocks:
        for name in ("to_q", "to_out"):
            assert isinstance(getattr(block.cross_attn, name), Int8Linear)
        assert isinstance(block.self_attn.to_k, Int8Linear)
        assert is_float_linear(block.cross_attn.to_k) and is_float_linear(block.cross_attn.to_v)  # once per call
    assert is_float_linear(fast.text_proj) and isinstance(fast.head, Int8Linear)


def logits_probe(pipe):
    """(text with guidance for two prompts, the fp32 base transformer, 4 random token grids): a fixed input."""
    text = pipe.encode_prompt(["a red circle", "a blue square"])
    fp32 = pipe.transformer
    grid = fp32.config.grid_size
    return text, fp32, torch.randint(0, fp32.config.codebook_size, (4, grid, grid), generator=seeded(0))


def test_quantized_logits_stay_close_to_fp32(tiny_pipe):
    text, fp32, ids = logits_probe(tiny_pipe)
    with torch.no_grad():
        reference = fp32(ids, cache=fp32.precompute(text))
        fast_model = tiny_pipe.quantize("int8").transformer
        fast = fast_model(ids, cache=fast_model.precompute(text))
    fidelity = logits_fidelity(reference, fast)
    assert fidelity["cosine_mean"] > 0.99
    assert logits_fidelity(reference, reference)["top1_agreement"] == 1.0


def test_quantized_pipeline_generates_deterministically(tiny_pipe):
    tiny_pipe.quantize("int8")
    run = lambda: tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="ids").ids  # noqa: E731
    assert torch.equal(run(), run())


def test_quantized_pipeline_refuses_what_needs_fp32(tiny_pipe, tmp_path):
    tiny_pipe.quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        tiny_pipe.quantize("int8")
    with pytest.raises(ValueError, match="full-precision"):
        tiny_pipe.save_pretrained(tmp_path / "x")
    with pytest.raises(ValueError, match="full-precision"):
        tiny_pipe.learn_concept([torch.zeros(3, 8, 8)], "<x>", "circle", steps=1)


def test_unknown_quantization_is_a_clear_error(tiny_pipe):
    with pytest.raises(ValueError, match="int8"):
        tiny_pipe.quantize("int4")


def test_int8_warns_where_this_cpu_multiplies_int8_slower_than_fp32(tiny_pipe, monkeypatch, caplog):
    import musekit.models.quantize as quantize

    assert quantize.int8_speedup() > 0  # measured once per process
    monkeypatch.setattr(quantize, "int8_speedup", lambda: 0.02)
    with caplog.at_level("WARNING", logger="musekit.models.quantize"):
        tiny_pipe.quantize("int8")
    assert "int8 matrix products run 50.0x slower than fp32" in caplog.text and "int8 will be slower" in caplog.text


def test_int8_says_nothing_where_it_is_faster(tiny_pipe, monkeypatch, caplog):
    import musekit.models.quantize as quantize

    monkeypatch.setattr(quantize, "int8_speedup", lambda: 2.5)
    with caplog.at_level("WARNING", logger="musekit.models.quantize"):
        tiny_pipe.quantize("int8-all")
    assert "slower" not in caplog.text


def test_bf16_linears_keeps_the_sensitive_linears_in_fp32(tiny_pipe):
    from musekit.models.quantize import Bf16Linear

    tiny_pipe.quantize("bf16-linears")
    assert tiny_pipe.precision == "bf16-linears"
    for model in (tiny_pipe.transformer, tiny_pipe.superres):
        for block in model.blocks:
            assert isinstance(block.self_attn.to_q, Bf16Linear) and isinstance(block.self_attn.to_k, Bf16Linear)
            assert is_float_linear(block.self_attn.to_v) and is_float_linear(block.self_attn.to_out)  # sensitive
            assert isinstance(block.cross_attn.to_q, Bf16Linear) and isinstance(block.cross_attn.to_out, Bf16Linear)
            assert is_float_linear(block.cross_attn.to_k) and is_float_linear(block.cross_attn.to_v)  # once per call
            assert isinstance(block.mlp.fc1, Bf16Linear) and isinstance(block.mlp.fc2, Bf16Linear)
        assert is_float_linear(model.head) and is_float_linear(model.text_proj)
        assert model.patch_in is None or is_float_linear(model.patch_in)


def test_bf16_linears_stays_closer_to_fp32_than_the_whole_forward_in_bf16(tiny_pipe):
    from musekit.models.half import HalfPrecisionModel
    from musekit.models.quantize import Bf16Linear, swap_step_linears

    text, fp32, ids = logits_probe(tiny_pipe)
    with torch.no_grad():
        cache = fp32.precompute(text)
        reference = fp32(ids, cache=cache)
        linears = swap_step_linears(fp32, lambda m: m(ids, cache=cache), "most", Bf16Linear)(ids, cache=cache)
        half = HalfPrecisionModel(fp32, "bf16")
        whole = half(ids, cache=half.cast(cache))
    error = lambda x: ((x.float() - reference).norm() / reference.norm()).item()  # noqa: E731
    assert 0 < error(linears) < error(whole) < 0.05
    assert logits_fidelity(reference, linears)["cosine_mean"] > 0.999


def test_sensitive_linears_of_the_amused_architecture():
    from functools import partial

    from musekit.eval.bench_amused import _forward, bench_inputs, random_models
    from musekit.models.quantize import sensitive_linears, step_linears

    config, _, ours = random_models("tiny")
    _, _, micro, text, probe = bench_inputs(config, 1)
    with torch.no_grad():
        cache = ours.precompute(text, micro_conds=micro)
    names = step_linears(ours, partial(_forward, ids=probe, cache=cache))
    kept = set(sensitive_linears(ours, names))
    layers = len(ours.transformer_layers)
    expected = {f"transformer_layers.{i}.attn1.{leaf}" for i in range(layers) for leaf in ("to_v", "to_out")}
    assert kept == expected | {"project_to_hidden"}
    assert any(".attention_blocks." in n and n.endswith("attn1.to_out") for n in names)  # cross-attention: swapped


def test_bf16_linears_is_a_cpu_path(tiny_pipe, monkeypatch):
    import musekit.models.quantize as quantize

    monkeypatch.setattr(type(tiny_pipe), "device", property(lambda self: torch.device("cuda")))
    with pytest.raises(ValueError, match="bf16-linears is a CPU path"):
        quantize.quantize_pipeline(tiny_pipe, "bf16-linears")


def test_bf16_linears_warns_where_this_cpu_multiplies_bf16_slower_than_fp32(tiny_pipe, monkeypatch, caplog):
    import musekit.models.quantize as quantize

    monkeypatch.setattr(quantize, "bf16_speedup", lambda: 0.01)
    with caplog.at_level("WARNING", logger="musekit.models.quantize"):
        tiny_pipe.quantize("bf16-linears")
    assert "bf16 matrix products run 100.0x slower than fp32" in caplog.text
    assert "bf16-linears will be slower" in caplog.text


def test_bf16_linears_on_a_patch_transformer_keeps_the_patch_input_and_the_head(tiny_pipe):
    from musekit.models.quantize import Bf16Linear, sensitive_linears, step_linears, swap_step_linears
    from musekit.models.transformer import MaskedTransformer

    model = MaskedTransformer(tiny_pipe.transformer.config.replace(patch_size=2)).eval()
    text = tiny_pipe.encode_prompt(["a red circle"])
    grid = model.config.grid_size
    ids = torch.full((2, grid, grid), model.config.mask_token_id)
    with torch.no_grad():
        cache = model.precompute(text)
    step = lambda m: m(ids, cache=cache)  # noqa: E731
    kept = set(sensitive_linears(model, step_linears(model, step)))
    assert {"patch_in", "head"} <= kept and "patch_out" not in kept
    fast = swap_step_linears(model, step, "most", Bf16Linear)
    assert is_float_linear(fast.patch_in) and isinstance(fast.patch_out, Bf16Linear)


def test_flops_by_precision_counts_each_swapped_linear():
    from musekit.eval.bench_amused import flops_by_precision
    from musekit.models.quantize import Bf16Linear

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Bf16Linear(nn.Linear(8, 4)), nn.Linear(4, 2)

        def forward(self, ids, cache=None):
            return self.b(self.a(ids))

    x = torch.randn(3, 5, 8)
    split = flops_by_precision(Two(), None, x, total=10_000)
    assert split == {"fp32": 10_000 - 2 * 15 * 8 * 4, "bf16": 2 * 15 * 8 * 4, "int8": 0}


def test_swap_step_linears_names_its_scopes(tiny_pipe):
    from musekit.models.quantize import swap_step_linears

    with pytest.raises(ValueError, match="scope must be one of"):
        swap_step_linears(tiny_pipe.transformer, lambda m: None, "some")
