"""Parity of musekit's aMUSEd VQ model with diffusers' VQModel (random weights, tiny configs)."""

import pytest
import torch

from musekit.tokenizer.amused_vq import AmusedVQConfig, AmusedVQModel

diffusers = pytest.importorskip("diffusers", reason="parity tests need the diffusers test extra")


def build_pair(config: AmusedVQConfig, seed: int = 0):
    n = len(config.block_out_channels)
    torch.manual_seed(seed)
    reference = diffusers.VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
        num_vq_embeddings=config.num_vq_embeddings, norm_num_groups=config.norm_num_groups,
        mid_block_add_attention=False, lookup_from_codebook=True,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = AmusedVQModel(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


@pytest.mark.parametrize("channels", [(8,), (8, 16), (8, 16, 16)])
def test_encode_and_decode_match_diffusers(channels):
    config = AmusedVQConfig(block_out_channels=channels, layers_per_block=1, latent_channels=4,
                            num_vq_embeddings=32, norm_num_groups=4)  # fmt: skip
    reference, ours = build_pair(config)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latents = reference.encode(images).latents
        _, _, (_, _, ids_ref) = reference.quantize(latents)
        ids = ours.encode(images)
        assert torch.equal(ids.flatten(), ids_ref.flatten())
        assert torch.equal(ours.encode(images, torch.arange(config.num_vq_embeddings)), ids)
        subset = torch.tensor([3, 7, 11])
        assert set(ours.encode(images, subset).unique().tolist()) <= {3, 7, 11}
        side = 16 // config.downsample_factor
        expected = reference.decode(ids, force_not_quantize=True, shape=(2, side, side, config.latent_channels)).sample
        got = ours.decode(ids)
    assert (got - expected.clamp(0, 1)).abs().max().item() <= 1e-5
