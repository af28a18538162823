import pytest
import torch
from safetensors.torch import save_file

from musekit.config import VQConfig
from musekit.io.checkpoint import load_component, save_component
from musekit.tokenizer import VQModel
from musekit.tokenizer.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    discriminator_hinge_loss,
    generator_adversarial_loss,
    reconstruction_loss,
)


def tiny_vq(**changes) -> VQModel:
    torch.manual_seed(0)
    return VQModel(VQConfig.preset("tiny").replace(**changes))


def images(batch=2, size=8, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("changes", [{}, {"stem_unshuffle": 2}, {"l2_normalize_codes": False}])
def test_encode_decode_shapes(changes):
    vq = tiny_vq(**changes)
    f = vq.downsample_factor
    x = images(size=4 * f)
    ids = vq.encode(x)
    assert ids.shape == (2, 4, 4) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < vq.config.codebook_size
    out = vq.decode(ids)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_fully_convolutional_any_size():
    vq = tiny_vq()
    assert vq.encode(images(size=16)).shape == (2, 8, 8)
    assert vq.encode(torch.rand(1, 3, 8, 12)).shape == (1, 4, 6)


def test_bad_image_shape_is_a_clear_error():
    vq = tiny_vq()
    with pytest.raises(ValueError, match="multiples"):
        vq.encode(torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match="shape"):
        vq.encode(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="token ids"):
        vq.decode(torch.full((1, 2, 2), 99))


def test_training_step_reaches_every_parameter_and_straight_through():
    vq = tiny_vq()
    disc = PatchDiscriminator(channels=8, num_layers=2)
    x = images(size=16)
    out = vq(x)
    loss = reconstruction_loss(out.reconstruction, x) + out.quantizer.loss
    loss = loss + 0.1 * generator_adversarial_loss(disc(out.reconstruction))
    loss.backward()
    for name, p in vq.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    d_loss = discriminator_hinge_loss(disc(x), disc(out.reconstruction.detach()))
    assert torch.isfinite(d_loss)


def test_usage_statistics_and_dead_code_restart():
    vq = tiny_vq(dead_code_threshold=0.5)
    vq.train()
    out = vq(images(size=16))
    assert 1.0 <= out.quantizer.perplexity <= vq.config.codebook_size
    assert 0 < out.quantizer.usage <= 1
    vq.quantizer.code_usage.zero_()
    vq.quantizer.code_usage[0] = 1.0
    before = vq.quantizer.embedding.weight.detach().clone()
    restarted = vq.quantizer.restart_dead_codes(out.latents, generator=torch.Generator().manual_seed(0))
    assert restarted == vq.config.codebook_size - 1
    after = vq.quantizer.embedding.weight.detach()
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1:], after[1:])


def test_save_load_round_trip(tmp_path):
    vq = tiny_vq()
    save_component(vq, vq.config, tmp_path / "vq")
    loaded = load_component(VQModel, VQConfig, tmp_path / "vq")
    x = images(size=16)
    assert torch.equal(vq.encode(x), loaded.encode(x))
    assert torch.equal(vq.decode(vq.encode(x)), loaded.decode(vq.encode(x)))


def test_strict_loading_rejects_other_architectures(tmp_path):
    vq = tiny_vq()
    save_component(vq, vq.config, tmp_path / "vq")
    other = VQModel(VQConfig.preset("tiny").replace(latent_dim=8))
    from musekit.io.checkpoint import load_state_strict

    with pytest.raises(ValueError, match="shape"):
        load_state_strict(other, tmp_path / "vq" / "model.safetensors")


def test_perceptual_loss_only_with_local_weights(tmp_path):
    assert PerceptualLoss.from_local(None) is None
    assert PerceptualLoss.from_local(tmp_path / "missing.safetensors") is None
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in PerceptualLoss().features.state_dict().items()}
    save_file(state, tmp_path / "vgg16.safetensors")
    loss_fn = PerceptualLoss.from_local(tmp_path / "vgg16.safetensors")
    x = images(1, 32)
    assert loss_fn(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss_fn(x, images(1, 32, seed=1)).item() > 0


def test_code_subset_covers_the_codebook_and_restricts_encoding():
    from musekit.tokenizer import code_usage, select_codes

    torch.manual_seed(0)
    vq = VQModel(VQConfig.preset("tiny")).eval()
    images = torch.rand(4, 3, 16, 16)
    size = vq.config.codebook_size
    usage = code_usage(vq.encode(images), size)
    assert usage.sum() == vq.encode(images).numel()
    kept = select_codes(vq.quantizer.codebook(), usage, 6)
    assert len(kept) <= 6 and kept.unique().numel() == len(kept) and torch.equal(kept, kept.sort().values)
    assert torch.equal(select_codes(vq.quantizer.codebook(), usage, size), torch.arange(size))
    restricted = vq.encode(images, kept)
    assert set(restricted.unique().tolist()) <= set(kept.tolist())
    assert torch.equal(vq.encode(images, torch.arange(size)), vq.encode(images))
    # each restricted token is the nearest allowed code of its latent
    z = torch.nn.functional.normalize(vq.encode_latents(images), dim=1) if vq.quantizer.l2_normalize else None
    if z is not None:
        scores = torch.einsum("bdhw,kd->bhwk", z, vq.quantizer.codebook()[kept])
        assert torch.equal(kept[scores.argmax(-1)], restricted)
    with pytest.raises(ValueError, match="k must be"):
        select_codes(vq.quantizer.codebook(), usage, 0)


def test_patch_encoder_codes_each_patch_alone():
    """encoder="patch": a code depends on its own pixels only, so equal patches get equal codes anywhere."""
    vq = tiny_vq(encoder="patch", channel_mult=(1,), stem_unshuffle=2)
    assert vq.downsample_factor == 2
    x = images(batch=1, size=8)
    x[..., 0:2, 0:2] = x[..., 4:6, 6:8]  # patch (0, 0) equals patch (2, 3)
    latents = vq.encode_latents(x)
    assert torch.allclose(latents[..., 0, 0], latents[..., 2, 3])
    ids = vq.encode(x)
    assert ids[0, 0, 0] == ids[0, 2, 3]
    y = x.clone()
    y[..., 2:4, 2:4] = 1.0 - y[..., 2:4, 2:4]  # change patch (1, 1) only
    changed = (vq.encode_latents(y) - latents).abs().sum(1)[0] > 0
    assert changed[1, 1] and changed.sum() == 1
    assert vq.decode(ids).shape == x.shape


def test_patch_encoder_needs_a_stem_only_factor():
    from musekit.config import ConfigError

    with pytest.raises(ConfigError, match="patch encoder"):
        VQConfig.preset("tiny").replace(encoder="patch")  # channel_mult (1, 2) downsamples with convolutions
    with pytest.raises(ConfigError, match="encoder must be"):
        VQConfig.preset("tiny").replace(encoder="attention")
