"""torch.compile of the CPU fast paths' blocks (musekit.models.compiled) and what quantize does with it."""

import pytest
import torch

from musekit.models.compiled import compile_blocks, cpp_compiler
from musekit.models.quantize import Bf16Linear, logits_fidelity, swap_step_linears

needs_compiler = pytest.mark.skipif(cpp_compiler() is None, reason="inductor needs a C++ compiler on a CPU")


@needs_compiler
def test_compiled_blocks_give_the_eager_logits_and_keep_the_state_dict():
    from functools import partial

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
def test_a_compiled_quantized_pipeline_generates_deterministically(tiny_pipe):
    tiny_pipe.quantize("bf16-linears", compile=True)
    run = lambda: tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="ids").ids  # noqa: E731
    first = run()
    assert torch.equal(first, run())


def test_a_quantized_pipeline_draws_the_amused_scheduler_by_inverse_cdf(tiny_pipe):
    tiny_pipe.scheduler_config = tiny_pipe.scheduler_config.replace(kind="amused")
    tiny_pipe.quantize("int8")
    assert tiny_pipe.scheduler_config.draws == "inverse-cdf"
    ids = tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="ids").ids
    assert not (ids == tiny_pipe.transformer.config.mask_token_id).any()
