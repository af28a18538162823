"""torch.compile of the CPU fast paths' blocks (musekit.models.compiled) and what quantize does with it."""

import pytest
import torch

from musekit.models.compiled import compile_blocks, cpp_compiler
from musekit.models.quantize import Bf16Linear, logits_fidelity, swap_step_linears

needs_compiler = pytest.mark.skipif(cpp_compiler() is None, reason="inductor needs a C++ compiler on a CPU")


@needs_compiler
def test_compiled_blocks_give_the_eager_logits_and_keep_the_state_dict():
    from functools import partial

    pytest.importorskip("diffusers", reason="the aMUSEd reference weights need the diffusers test extra")
    from musekit.eval.bench_amused import _forward, bench_inputs, random_models

    config, _, ours = random_models("tiny")
    _, _, micro, text, probe = bench_inputs(config, 1)
    with torch.no_grad():
        cache = ours.precompute(text, micro_conds=micro)
        eager = swap_step_linears(ours, partial(_forward, ids=probe, cache=cache), "most", Bf16Linear)
        keys = list(eager.state_dict())
        expected = eager(probe, cache=cache)
        count = compile_blocks(eager)
        compiled = eager(probe, cache=cache)
    blocks = len(ours.transformer_layers) + 2 * (len(ours.down_block.res_blocks) + len(ours.up_block.res_blocks))
    assert count == blocks
    assert list(eager.state_dict()) == keys
    assert logits_fidelity(expected, compiled)["cosine_mean"] > 0.9999
    assert torch.allclose(compiled, expected, atol=1e-2, rtol=1e-2)


def test_compile_blocks_is_for_inference(tiny_pipe):
    with pytest.raises(ValueError, match="inference"):
        compile_blocks(tiny_pipe.transformer.train())


def test_compile_needs_a_cpp_compiler_on_a_cpu(tiny_pipe, monkeypatch):
    import musekit.models.compiled as compiled

    monkeypatch.setattr(compiled, "cpp_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        tiny_pipe.quantize("int8", compile=True)
    assert tiny_pipe.precision == "fp32"  # refused before anything changed
    tiny_pipe.quantize("int8")


@needs_compiler
@pytest.mark.parametrize("kind", ["bf16-linears", "int8"])
def test_a_compiled_quantized_pipeline_runs_compiled_and_stays_close_to_eager(tiny_pipe, kind):
    from musekit.models.quantize import QUANTIZATIONS, quantize_pipeline

    text = tiny_pipe.encode_prompt(["a red circle"])
    fp32 = tiny_pipe.transformer
    grid = fp32.config.grid_size
    ids = torch.randint(0, fp32.config.codebook_size, (1, grid, grid), generator=torch.Generator().manual_seed(0))
    run = lambda: tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="ids").ids  # noqa: E731
    # a block past dynamo's recompile limit would run eagerly: make that an error here
    with torch.no_grad(), torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        cache = fp32.precompute(text)
        eager = swap_step_linears(fp32, lambda m: m(ids, cache=cache), *QUANTIZATIONS[kind])(ids, cache=cache)
        quantize_pipeline(tiny_pipe, kind, compile=True)
        compiled = tiny_pipe.transformer(ids, cache=cache)
        first = run()
        assert torch.equal(first, run())
    assert all(b._compiled_call_impl is not None for b in tiny_pipe.transformer.blocks)
    assert logits_fidelity(eager, compiled)["cosine_mean"] > 0.9999


def test_a_failed_quantize_leaves_the_pipeline_as_it_was(tiny_pipe, monkeypatch):
    import musekit.models.compiled as compiled

    calls = []

    def fail_on_the_second(model):
        calls.append(model)
        if len(calls) == 2:
            raise RuntimeError("no kernels for the super-resolution model")

    monkeypatch.setattr(compiled, "require_cpp_compiler", lambda: None)
    monkeypatch.setattr(compiled, "compile_blocks", fail_on_the_second)
    base = tiny_pipe.transformer
    with pytest.raises(RuntimeError, match="super-resolution"):
        tiny_pipe.quantize("int8", compile=True)
    assert tiny_pipe.transformer is base and tiny_pipe.precision == "fp32"


@needs_compiler
def test_attention_maps_run_on_a_compiled_copy(tiny_pipe):
    from musekit.models.attention_maps import cross_attention_maps

    tiny_pipe.quantize("bf16-linears", compile=True)
    model = tiny_pipe.transformer
    text = tiny_pipe.encode_prompt(["a red circle"])
    grid = model.config.grid_size
    with torch.no_grad():
        cache = model.precompute(text)
        ids = torch.full((cache.batch_size, grid, grid), model.config.mask_token_id)
        model(ids, cache=cache)  # compiled at this shape first: hooks added later must still run
        maps = cross_attention_maps(model, ids, cache)
    assert maps.shape[:2] == (cache.batch_size, grid * grid)
    assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:2]), atol=1e-4)
