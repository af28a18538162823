"""Parity of musekit's U-ViT with diffusers' UVit2DModel (aMUSEd) on random weights."""

import pytest
import torch

from musekit.config import UVitConfig
from musekit.models.uvit import UVitTransformer, from_diffusers_state_dict, to_diffusers_state_dict
from musekit.text import TextEmbeddings

diffusers = pytest.importorskip("diffusers", reason="parity tests need the diffusers test extra")


def build_pair(config: UVitConfig, seed: int = 0):
    torch.manual_seed(seed)
    reference = diffusers.UVit2DModel(**config.to_dict()).eval()
    with torch.no_grad():  # diffusers zero-initialises some tensors; randomise everything for a real test
        for p in reference.parameters():
            p.normal_(0, 0.2)
    ours = UVitTransformer(config).eval()
    ours.load_state_dict(from_diffusers_state_dict(reference.state_dict()), strict=True)
    return reference, ours


def inputs(config: UVitConfig, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    side = config.sample_size
    ids = torch.randint(0, config.vocab_size, (batch, side, side), generator=g)
    text = torch.randn(batch, 7, config.encoder_hidden_size, generator=g)
    pooled = torch.randn(batch, config.cond_embed_dim, generator=g)
    micro = torch.tensor([[256.0, 256.0, 0.0, 0.0, 6.0]]).repeat(batch, 1)
    return ids, text, pooled, micro


@pytest.mark.parametrize("downsample", [False, True])
def test_logits_match_diffusers_on_tiny_configs(downsample):
    config = UVitConfig.preset("tiny").replace(downsample=downsample, upsample=downsample)
    reference, ours = build_pair(config)
    ids, text, pooled, micro = inputs(config)
    with torch.no_grad():
        expected = reference(ids, text, pooled, micro).flatten(2).transpose(1, 2)
        got = ours(ids, cache=ours.precompute(_text(text, pooled), micro_conds=micro))
    assert got.shape == (2, config.sample_size**2, config.codebook_size)
    assert (got - expected).abs().max().item() <= 1e-4


def test_a_wider_config_matches_too():
    config = UVitConfig.preset("tiny").replace(hidden_size=32, in_channels=16, block_out_channels=16,
                                               block_num_heads=2, num_attention_heads=4, num_hidden_layers=2,
                                               num_res_blocks=2, intermediate_size=40, encoder_hidden_size=12,
                                               cond_embed_dim=12, sample_size=8)  # fmt: skip
    reference, ours = build_pair(config, seed=3)
    ids, text, pooled, micro = inputs(config, seed=4)
    with torch.no_grad():
        expected = reference(ids, text, pooled, micro).flatten(2).transpose(1, 2)
        got = ours(ids, cache=ours.precompute(_text(text, pooled), micro_conds=micro))
    assert (got - expected).abs().max().item() <= 1e-4
    assert set(to_diffusers_state_dict(ours.state_dict())) == set(reference.state_dict())


def _text(states, pooled):
    from musekit.text import TextEmbeddings

    return TextEmbeddings(states, pooled, torch.ones(states.shape[:2], dtype=torch.bool))


def test_full_amused_256_config_matches_diffusers():
    """The published amused-256 geometry (603.5M parameters) with random weights (about 40 s on a 2-core CPU)."""
    config = UVitConfig.preset("amused-256")
    torch.manual_seed(0)
    reference = diffusers.UVit2DModel(**config.to_dict()).eval()
    with torch.no_grad():
        for p in reference.parameters():
            if p.abs().sum() == 0:  # zero-initialised tensors (GRN gamma/beta) would hide a missing term
                p.normal_(0, 0.02)
    ours = UVitTransformer(config).eval()
    ours.load_state_dict(from_diffusers_state_dict(reference.state_dict()), strict=True)
    ids, text, pooled, micro = inputs(config, batch=1)
    with torch.no_grad():
        expected = reference(ids, text, pooled, micro).flatten(2).transpose(1, 2)
        got = ours(ids, cache=ours.precompute(_text(text, pooled), micro_conds=micro))
    assert (got - expected).abs().max().item() <= 1e-4


def test_uvit_logits_at_positions_equal_the_full_logits_there():
    config = UVitConfig.preset("tiny")
    torch.manual_seed(0)
    model = UVitTransformer(config).eval()
    g = torch.Generator().manual_seed(0)
    side = config.sample_size
    ids = torch.randint(0, config.codebook_size, (2, side, side), generator=g)
    text = TextEmbeddings(
        torch.randn(2, 5, config.encoder_hidden_size, generator=g),
        torch.randn(2, config.cond_embed_dim, generator=g),
        torch.ones(2, 5, dtype=torch.bool),
    )
    with torch.no_grad():
        cache = model.precompute(text)
        full = model(ids, cache=cache)
        positions = torch.tensor([[0, 2], [side * side - 1, 1]])
        part = model(ids, cache=cache, positions=positions)
    assert torch.allclose(part, full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1])), atol=1e-5)


def test_blended_peak_is_the_rate_of_each_share_at_its_own_peak():
    from musekit.eval.bench_amused import blended_peak

    peaks = {"fp32": 100.0, "bf16": 400.0, "int8": 800.0}
    assert blended_peak({"fp32": 0, "bf16": 10**9, "int8": 0}, peaks) == 400.0
    # 1 GFLOP at 100 (0.01 s) + 4 GFLOP at 400 (0.01 s): 5 GFLOP in 0.02 s
    assert abs(blended_peak({"fp32": 10**9, "bf16": 4 * 10**9, "int8": 0}, peaks) - 250.0) < 1e-9


def test_bench_runs_both_stacks_and_the_fast_paths_on_the_tiny_preset():
    from musekit.eval.bench_amused import FAST_PATHS, run_bench

    assert FAST_PATHS == ("int8", "int8_all", "bf16", "bf16_linears", "bf16_ff", "bf16_all_linears")
    (row,) = run_bench("tiny", batches=(1,), steps=2, repeats=1, paths=FAST_PATHS)
    assert row["same_ids"] is True  # the exact fp32 path decodes the same ids as diffusers
    assert row["diffusers_s"] > 0 and row["musekit_s"] > 0 and row["skipped_paths"] == []
    for path in FAST_PATHS:
        assert row[f"musekit_{path}_s"] > 0 and row[f"speedup_{path}"] > 0
        assert set(row[f"{path}_fidelity"]) == {"cosine_mean", "cosine_min", "top1_agreement"}
        assert row[f"{path}_fidelity"]["cosine_mean"] > 0.99
    assert row["gflop_per_image"] > 0 and row["int8_linear_peak_gflops"] > 0 and row["bf16_matmul_peak_gflops"] > 0
    for path in FAST_PATHS:  # the roofline of each path: its FLOPs split by the precision of their products
        share = row[f"{path}_flop_share"]
        assert abs(sum(share.values()) - 1) < 1e-9 and row[f"{path}_blended_peak_gflops"] > 0
    assert row["bf16_flop_share"]["bf16"] == 1 and row["int8_all_flop_share"]["bf16"] == 0
    assert 0 < row["bf16_linears_flop_share"]["fp32"] < row["bf16_ff_flop_share"]["fp32"] < 1
    (row,) = run_bench("tiny", batches=(1,), steps=2, repeats=1, paths=())
    assert row["skipped_paths"] == list(FAST_PATHS) and "musekit_int8_s" not in row
    with pytest.raises(ValueError, match="unknown fast paths"):
        run_bench("tiny", batches=(1,), paths=("fp8",))
