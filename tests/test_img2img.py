"""Image-to-image: strength edges, revision of kept tokens, the SR keep region, windows for non-square images,
the aMUSEd scheduler's behaviour."""

import pytest
import torch

from musekit.config import SchedulerConfig
from musekit.editing.img2img import changed_region
from musekit.editing.inpaint import encode_stages
from musekit.sampling.sampler import decode_tokens

from .conftest import PROMPT, scene, seeded


def test_img2img_strength_edges(tiny_pipe, monkeypatch):
    image = scene()
    base_ids, high_ids = encode_stages(tiny_pipe, image)
    zero = tiny_pipe.img2img(image, PROMPT, strength=0.0, generator=seeded(0), output_type="pt")
    assert torch.equal(zero.base_ids, base_ids) and torch.equal(zero.ids, high_ids)
    assert torch.equal(zero.images, image)
    starts = []
    original = tiny_pipe.generate_tokens
    revised = []

    def spy(*args, **kwargs):
        starts.append(args[6])
        revised.append(kwargs.get("revise", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe, "generate_tokens", spy)
    out = tiny_pipe.img2img(image, PROMPT, strength=1.0, generator=seeded(0), output_type="ids")
    mask_id = tiny_pipe.transformer.config.mask_token_id
    assert (starts[0] == mask_id).all() and len(starts) == 2  # 1.0 regenerates every base token
    assert not revised[0]  # nothing kept, nothing to revise: the base stage decodes as generation does
    changed = changed_region(out.base_ids != base_ids, tiny_pipe.superres.config.grid_size)
    # and the SR tokens wherever the base changed (all of them there: the tiny config's sr_strength is 1)
    assert torch.equal(starts[1] == mask_id, changed)
    starts.clear()
    revised.clear()
    tiny_pipe.img2img(image, PROMPT, strength=0.5, generator=seeded(0), output_type="ids")
    masked = (starts[0] == mask_id).float().mean().item()
    assert 0 < masked < 1 and revised[0]
    with pytest.raises(ValueError, match="strength"):
        tiny_pipe.img2img(image, PROMPT, strength=1.5)


def test_img2img_revises_kept_tokens_and_keeps_sr_tokens_where_the_base_did_not_change(tiny_pipe, monkeypatch):
    image = scene()
    base_ids, high_ids = encode_stages(tiny_pipe, image)
    calls = []
    original = tiny_pipe.generate_tokens
    monkeypatch.setattr(tiny_pipe, "generate_tokens", lambda *a, **k: calls.append((a, k)) or original(*a, **k))
    out = tiny_pipe.img2img(image, "a green square", strength=0.4, generator=seeded(1), output_type="ids")
    (base_args, base_kwargs), _ = calls
    assert base_kwargs.get("revise") is True and base_args[7] is None  # no step count: the model's full count
    start = base_args[6]
    kept = start != tiny_pipe.transformer.config.mask_token_id
    assert kept.any() and not torch.equal(out.base_ids[kept], base_ids[kept])  # kept tokens can be redrawn
    # the SR stage redraws only where the base changed, grown by one base token: force one corner token to change
    corner = base_ids.clone()
    corner[:, 0, 0] = (corner[:, 0, 0] + 1) % tiny_pipe.vqgan.config.codebook_size
    monkeypatch.setattr(tiny_pipe, "generate_tokens", lambda *a, **k: corner if k.get("revise") else original(*a, **k))
    out = tiny_pipe.img2img(image, "a green square", strength=0.4, generator=seeded(1), output_type="ids")
    changed = changed_region(corner != base_ids, tiny_pipe.superres.config.grid_size)
    grid, base_grid = tiny_pipe.superres.config.grid_size, base_ids.shape[-1]
    assert changed.sum() == (2 * grid // base_grid) ** 2 and changed[0, 0, 0]  # the corner and its neighbours
    assert torch.equal(out.ids[~changed], high_ids[~changed])


def test_img2img_redraws_a_non_square_image_in_windows_at_the_model_scale(tiny_pipe, monkeypatch):
    """A 40x16 image on a 16 px model: windows at columns 12-27 (the middle, first), then 0-15 and 24-39, each
    seeing what the ones before drew and keeping only its new columns; squash is one pass on the squeezed image."""
    import musekit.editing.img2img as module

    wide = torch.rand(1, 3, 16, 40, generator=seeded(2))
    inputs, outputs = [], []
    original = module.redraw

    def spy(pipe, images, *args):
        inputs.append(images.clone())
        outputs.append(original(pipe, images, *args))
        return outputs[-1]

    monkeypatch.setattr(module, "redraw", spy)
    out = tiny_pipe.img2img(wide, PROMPT, strength=0.6, generator=seeded(0), output_type="pt")
    assert out.images.shape == (1, 3, 16, 40) and len(inputs) == 3
    first = tiny_pipe.decode(outputs[0][0], "pt")
    assert torch.equal(inputs[0], wide[..., 12:28])  # the middle window first, at the image's own scale
    assert torch.allclose(out.images[..., 12:28], first)  # kept whole: later windows draw only new columns
    assert torch.allclose(inputs[1][..., 12:], first[..., :4])  # the left window sees the middle one's drawing
    assert torch.equal(inputs[1][..., :12], wide[..., :12])
    assert torch.allclose(inputs[2][..., :4], first[..., 12:])  # and so does the right one
    assert not torch.allclose(out.images[..., :12], wide[..., :12])
    assert torch.equal(out.ids, outputs[-1][0])  # the last window's ids
    inputs.clear()
    squashed = tiny_pipe.img2img(wide, PROMPT, strength=0.6, mode="squash", generator=seeded(0), output_type="pt")
    assert len(inputs) == 1 and torch.equal(inputs[0], module.resize(wide, 16))
    assert squashed.images.shape == (1, 3, 16, 40)
    tall = tiny_pipe.img2img(wide.transpose(-1, -2), PROMPT, strength=0.6, num_images_per_prompt=2,
                             generator=seeded(0), output_type="pt")  # fmt: skip
    assert tall.images.shape == (2, 3, 40, 16) and len(inputs) == 4
    assert torch.equal(tiny_pipe.img2img(wide, PROMPT, strength=0.0, output_type="pt").images, wide)
    with pytest.raises(ValueError, match="mode"):
        tiny_pipe.img2img(wide, PROMPT, strength=0.5, mode="fit")


@pytest.mark.parametrize("kind", ["maskgit", "amused"])
def test_revise_redraws_known_tokens_except_with_the_amused_scheduler(tiny_pipe, kind):
    # the aMUSEd scheduler reproduces diffusers, whose image-to-image keeps every unmasked token
    model = tiny_pipe.transformer
    text = tiny_pipe.encode_prompt(["a green square"], guidance_scale=1.0)
    cache = model.precompute(text[1:])
    ids, _ = encode_stages(tiny_pipe, scene())
    start = ids.clone()
    start[:, :2] = model.config.mask_token_id
    known = start != model.config.mask_token_id
    out = decode_tokens(model, cache, start, 4, SchedulerConfig(kind=kind), generator=seeded(0), revise=True)
    assert not (out == model.config.mask_token_id).any()
    assert torch.equal(out[known], start[known]) == (kind == "amused")


def test_img2img_with_the_amused_scheduler_keeps_diffusers_behaviour(tiny_pipe, monkeypatch):
    # kept tokens fixed and round(strength x steps) steps, as diffusers' img2img
    image = scene()
    base_ids, _ = encode_stages(tiny_pipe, image)
    tiny_pipe.scheduler_config = SchedulerConfig(kind="amused")
    calls = []
    original = tiny_pipe.generate_tokens
    monkeypatch.setattr(tiny_pipe, "generate_tokens", lambda *a, **k: calls.append((a, k)) or original(*a, **k))
    out = tiny_pipe.img2img(image, "a green square", strength=0.4, generator=seeded(1), output_type="ids")
    (args, kwargs), *_ = calls
    assert kwargs["revise"] is False and args[7] == max(1, round(tiny_pipe.config.num_inference_steps * 0.4))
    kept = args[6] != tiny_pipe.transformer.config.mask_token_id
    assert torch.equal(out.base_ids[kept], base_ids[kept])
