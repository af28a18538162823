"""Editing: locked tokens, mask polarity, exact composites, strength edges, the text-only region, the CLI."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from musekit.config import SchedulerConfig
from musekit.editing.img2img import changed_region
from musekit.editing.inpaint import encode_stages
from musekit.editing.maskfree import differing_positions, edit_region
from musekit.editing.masks import composite, feathered_alpha, token_mask
from musekit.editing.outpaint import plan_windows, window_starts
from musekit.sampling.sampler import decode_tokens

from .conftest import seeded

PROMPT = "a small red circle at the top left on a blue background"


def scene(size=16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=seeded(7))


def quadrant_mask(size=16) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., : size // 2, : size // 2] = True  # white (repaint) = top-left quadrant
    return mask


def test_inpaint_sr_region_starts_from_the_upsampled_new_base_image(tiny_pipe):
    """With sr_strength < 1 the SR stage starts the region from the new base image (as generation does), not from
    [MASK] alone; at 0 nothing is re-masked, so the region is exactly that re-tokenized image."""
    from musekit.editing.img2img import upsampled_start_ids

    image, mask = scene(), quadrant_mask()
    out = tiny_pipe.inpaint(image, mask, PROMPT, generator=seeded(0), output_type="pt", sr_strength=0.0)
    _, high_ids = encode_stages(tiny_pipe, image)
    region = token_mask(mask, tiny_pipe.superres.config.grid_size)
    upsampled = upsampled_start_ids(tiny_pipe, out.base_ids, 0.0, None)
    assert torch.equal(out.ids[region], upsampled[region])
    assert torch.equal(out.ids[~region], high_ids[~region])
    partial = tiny_pipe.inpaint(image, mask, PROMPT, generator=seeded(0), output_type="pt", sr_strength=0.5)
    assert torch.equal(partial.ids[~region], high_ids[~region])


def test_token_mask_polarity_and_touching_tokens():
    mask = quadrant_mask(16)
    tokens = token_mask(mask, 4)
    assert tokens[0, :2, :2].all() and not tokens[0, 2:].any() and not tokens[0, :, 2:].any()
    one_pixel = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    one_pixel[..., 5, 5] = True
    assert token_mask(one_pixel, 4).sum() == 1  # any token the mask touches


def test_feathered_alpha_is_zero_outside_and_one_deep_inside():
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., 4:28, 4:28] = True
    alpha = feathered_alpha(mask, 3)
    assert (alpha[~mask] == 0).all() and alpha[..., 16, 16] == 1 and 0 < alpha[..., 4, 16] < 1


def test_feathered_alpha_does_not_ramp_at_the_image_border():
    # an outpainted strip meets the border on three sides: only its edge inside the image blends, so no frame of the
    # canvas fill shows through there
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., :, 20:] = True
    alpha = feathered_alpha(mask, 3)
    assert (alpha[..., :, 23:] == 1).all()
    assert (alpha[..., 0, 23:] == 1).all() and (alpha[..., :, 31] == 1).all()
    assert 0 < alpha[..., 16, 20] < 1 and (alpha[..., :, :20] == 0).all()


def test_feathered_alpha_keeps_thin_masks():
    # a stroke thinner than the feather still gets some of the new image (it was eroded away to nothing)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 3:13, 8] = True
    alpha = feathered_alpha(mask, 2)
    assert (alpha[mask] > 0).all() and (alpha[~mask] == 0).all()
    half = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    half[..., :, :9] = True
    ramp = feathered_alpha(half, 2)[0, 0, 8, :]
    assert torch.allclose(ramp[5:10], torch.tensor([1.0, 1.0, 2 / 3, 1 / 3, 0.0]))  # linear from the edge inwards


def test_inpaint_locks_tokens_and_keeps_pixels_outside_the_mask(tiny_pipe):
    image, mask = scene(), quadrant_mask()
    out = tiny_pipe.inpaint(image, mask, PROMPT, generator=seeded(0), output_type="pt")
    base_ids, high_ids = encode_stages(tiny_pipe, image)
    base_keep = ~token_mask(mask, tiny_pipe.transformer.config.grid_size)
    high_keep = ~token_mask(mask, tiny_pipe.superres.config.grid_size)
    assert torch.equal(out.base_ids[base_keep], base_ids[base_keep])
    assert torch.equal(out.ids[high_keep], high_ids[high_keep])
    keep = ~mask.expand(1, 3, -1, -1)
    assert torch.equal(out.images[keep], image[keep])
    assert not torch.equal(out.images, image)


def test_inpaint_input_checks(tiny_pipe):
    image = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="size"):
        tiny_pipe.inpaint(image, Image.new("L", (8, 8)), PROMPT)
    with pytest.raises(ValueError, match="mode"):
        tiny_pipe.inpaint(image, Image.new("RGBA", (16, 16)), PROMPT)
    with pytest.raises(ValueError, match="empty"):
        tiny_pipe.inpaint(image, Image.new("L", (16, 16), 0), PROMPT)


def test_other_image_sizes_are_resized_and_composited_at_their_size(tiny_pipe):
    image = torch.rand(1, 3, 24, 24, generator=seeded(1))
    mask = quadrant_mask(24)
    out = tiny_pipe.inpaint(image, mask, PROMPT, generator=seeded(0), output_type="pt")
    assert out.images.shape == (1, 3, 24, 24)
    keep = ~mask.expand(1, 3, -1, -1)
    assert torch.equal(out.images[keep], image[keep])


def test_a_thin_mask_on_a_larger_image_is_still_repainted(tiny_pipe):
    """A 1 px stroke on a 64 px image (a 16 px model) reaches the model: nearest sampling skipped 3 rows of 4."""
    from musekit.editing.masks import resize_mask

    for row in range(4):
        stroke = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
        stroke[..., 20 + row, 8:40] = True
        model_mask = resize_mask(stroke, 16)
        assert model_mask[..., 5, 2:10].all() and model_mask.sum() == 8
    assert torch.equal(resize_mask(quadrant_mask(8), 16), F.interpolate(quadrant_mask(8).float(), size=16) > 0)
    image = torch.rand(1, 3, 64, 64, generator=seeded(3))
    out = tiny_pipe.inpaint(image, stroke, PROMPT, generator=seeded(0), output_type="pt")
    small = F.interpolate(image, size=16, mode="bilinear", antialias=True).clamp(0, 1)  # what the model sees
    assert not torch.equal(out.base_ids, encode_stages(tiny_pipe, small)[0])  # row 23's tokens are redrawn


def test_a_non_square_image_is_inpainted_in_the_square_around_the_mask(tiny_pipe, caplog):
    from musekit.editing.inpaint import square_window

    wide = torch.rand(1, 3, 16, 40, generator=seeded(2))
    mask = torch.zeros(1, 1, 16, 40, dtype=torch.bool)
    mask[..., 4:10, 30:36] = True  # near the right end
    assert square_window(mask) == (0, 24, 16)  # centred on the mask (4 px margin), then held inside the image
    with caplog.at_level("WARNING", logger="musekit"):
        out = tiny_pipe.inpaint(wide, mask, PROMPT, generator=seeded(0), output_type="pt")
    assert out.images.shape == (1, 3, 16, 40) and not caplog.records  # nothing squeezed, nothing to warn about
    keep = ~mask.expand(1, 3, -1, -1)
    assert torch.equal(out.images[keep], wide[keep])
    # the same as inpainting that square alone: the model sees it at the image's own proportions
    alone = tiny_pipe.inpaint(wide[..., 24:], mask[..., 24:], PROMPT, generator=seeded(0), output_type="pt")
    assert torch.equal(out.images[..., 24:], alone.images) and torch.equal(out.ids, alone.ids)
    tall = wide.transpose(-1, -2).contiguous()
    assert square_window(mask.transpose(-1, -2)) == (24, 0, 16)
    assert tiny_pipe.inpaint(tall, mask.transpose(-1, -2), PROMPT, generator=seeded(0), output_type="pt",
                             num_images_per_prompt=2).images.shape == (2, 3, 40, 16)  # fmt: skip
    # a mask longer than the shorter side: the whole image is squeezed into the model's square, with a warning
    long = torch.zeros(1, 1, 16, 40, dtype=torch.bool)
    long[..., 6:8, 2:38] = True
    assert square_window(long) is None and square_window(quadrant_mask()) is None
    with caplog.at_level("WARNING", logger="musekit"):
        out = tiny_pipe.inpaint(wide, long, PROMPT, generator=seeded(0), output_type="pt")
    assert out.images.shape == (1, 3, 16, 40) and "processed at the model's" in caplog.text


def test_outpaint_extends_the_canvas_and_keeps_the_original(tiny_pipe, caplog):
    image = scene()
    with caplog.at_level("WARNING", logger="musekit"):
        out = tiny_pipe.outpaint(image, PROMPT, pad=(0, 0, 4, 0), mode="window", generator=seeded(0),
                                 output_type="pt")  # fmt: skip
    assert not [r for r in caplog.records if "resized" in r.getMessage()]  # nothing is resized: the model's scale
    assert out.images.shape == (1, 3, 16, 20)
    assert torch.equal(out.images[..., :, :16], image)
    # one window of the model's size, at the right edge (columns 4-19), drew the strip, blended at its inner edge
    # with the image's continued edge pixels only: no grey canvas fill, neither at the seam nor as a frame
    decoded = F.pad(tiny_pipe.decode(out.ids, "pt"), (4, 0, 0, 0))
    mask = torch.zeros(1, 1, 16, 20, dtype=torch.bool)
    mask[..., 16:] = True
    expected = composite(F.pad(image, (0, 4, 0, 0), mode="replicate"), decoded, feathered_alpha(mask, 2))
    assert torch.allclose(out.images, expected, atol=1e-6)
    for mode in ("window", "fit"):
        thin = tiny_pipe.outpaint(image, PROMPT, pad=(0, 0, 1, 0), mode=mode, generator=seeded(0), output_type="pt")
        assert not torch.equal(thin.images[..., 16], image[..., 15])  # a 1 px strip is drawn, not the copied edge
    with pytest.raises(ValueError, match="pad"):
        tiny_pipe.outpaint(image, PROMPT, pad=(0, 0, 0, 0))


def test_outpaint_windows_go_outward_from_the_image_with_a_quarter_window_of_context():
    assert window_starts(16, 16, (0, 16)) == [0] and window_starts(10, 16, (2, 8)) == [0]
    assert window_starts(64, 16, (16, 32)) == [0, 4, 16, 28, 40, 48]  # over the image, then outward both ways
    for length, known in ((20, (0, 16)), (33, (17, 33)), (48, (16, 32)), (100, (40, 56)), (100, (0, 16))):
        starts = window_starts(length, 16, known)
        covered = torch.zeros(length, dtype=torch.bool)
        covered[known[0] : known[1]] = True
        for start in starts:
            assert 0 <= start <= length - 16
            covered[start : start + 16] = True
        assert covered.all()
        right = [a for a in starts if a > known[0]]
        assert not right or right[0] == min(known[1] - 4, length - 16)  # a quarter window of the image, or flush
        assert all(b - a <= 12 for a, b in zip(right, right[1:]))  # each keeps >= a quarter of the one before
    windows = plan_windows(16, 48, (0, 16, 16, 32), 16)  # the image in the middle of a canvas extended both ways
    assert (0, 16) not in windows  # nothing left to draw there
    assert windows == [(0, 4), (0, 28), (0, 0), (0, 32)]  # nearest the image first, then outward


def test_outpaint_seams_between_windows_are_drawn_not_left_as_fill(tiny_pipe, monkeypatch):
    """Only the seam with the original is feathered (with the initial fill there); pixels where a window meets an
    earlier window's drawing are the drawing, never the fill. A decoder that draws a constant shows it."""
    monkeypatch.setattr(tiny_pipe, "decode", lambda ids, output_type="pt": torch.full((ids.shape[0], 3, 16, 16), 0.9))
    image = torch.full((1, 3, 16, 16), 0.2)
    out = tiny_pipe.outpaint(image, PROMPT, pad=(0, 0, 32, 0), mode="window", fill=0.5, output_type="pt").images
    assert torch.equal(out[..., :16], image)
    assert torch.allclose(out[0, 0, :, 16:19], torch.tensor([0.5 + 0.4 / 3, 0.5 + 0.8 / 3, 0.9]).expand(16, 3))
    assert torch.allclose(out[..., 18:], torch.tensor(0.9))  # three windows, no band of fill at their seams
    # a pad under one pixel at the working scale (a 32 px image on a 16 px model) is still drawn
    big = torch.full((1, 3, 32, 32), 0.2)
    out = tiny_pipe.outpaint(big, PROMPT, pad=(0, 0, 1, 0), mode="window", fill=0.5, output_type="pt")
    assert out.ids is not None and out.images.shape == (1, 3, 32, 33)
    assert (
        torch.equal(out.images[..., :32], big) and (out.images[..., 32] > 0.51).all()
    )  # the drawing shows (feathered)


def test_outpaint_refuses_huge_requests_before_allocating(tiny_pipe):
    tiny = torch.rand(1, 3, 2, 2, generator=seeded(0))  # at the model's scale (8x) the canvas would be 64k px wide
    with pytest.raises(ValueError, match="windows of the model's size"):
        tiny_pipe.outpaint(tiny, PROMPT, pad=(0, 0, 8000, 0), mode="window")
    with pytest.raises(ValueError, match="needs at least 7123560 windows"):  # counted, not listed: 2669 x 2669 - 1
        tiny_pipe.outpaint(tiny, PROMPT, pad=(2000, 2000, 2000, 2000), mode="window")
    with pytest.raises(ValueError, match="max_windows must be a positive integer"):
        tiny_pipe.outpaint(tiny, PROMPT, pad=(0, 0, 4, 0), max_windows=0)


def test_outpaint_draws_at_the_model_scale_window_by_window(tiny_pipe, monkeypatch):
    """A canvas larger than the model is drawn in model-size windows, not squashed into one: every window the
    model sees is 16x16 pixels of the canvas at the image's own scale."""
    import musekit.editing.outpaint as module

    seen = []
    real = module.inpaint_tokens

    def spy(pipe, image, mask, *args):
        seen.append((tuple(image.shape), int(mask.sum())))
        return real(pipe, image, mask, *args)

    monkeypatch.setattr(module, "inpaint_tokens", spy)
    image = scene()
    out = tiny_pipe.outpaint(image, [PROMPT, PROMPT], pad=(16, 0, 16, 0), mode="window", generator=seeded(0),
                             output_type="pt")  # fmt: skip
    assert out.images.shape == (2, 3, 16, 48)
    assert torch.equal(out.images[..., 16:32], image.expand(2, -1, -1, -1))
    assert [shape for shape, _ in seen] == [(2, 3, 16, 16)] * 4
    assert sum(count for _, count in seen) == 2 * 16 * 32  # each new pixel drawn once
    # a larger image works at the model's scale too (its longer side becomes 16 px), and is kept exactly
    big = torch.rand(1, 3, 32, 32, generator=seeded(3))
    out = tiny_pipe.outpaint(big, PROMPT, pad=(0, 0, 32, 0), mode="window", generator=seeded(0), output_type="pt")
    out = out.images
    assert out.shape == (1, 3, 32, 64) and torch.equal(out[..., :32], big)
    # a side shorter than the model is drawn with scratch area, then cut back
    wide = torch.rand(1, 3, 8, 16, generator=seeded(4))
    out = tiny_pipe.outpaint(wide, PROMPT, pad=(0, 0, 4, 0), mode="window", generator=seeded(0), output_type="pil")
    out = out.images[0]
    assert out.size == (20, 8)
    with pytest.raises(ValueError, match="windows"):
        tiny_pipe.outpaint(image, PROMPT, pad=(64, 64, 64, 64), mode="window", max_windows=8)
    # "fit": one window, the whole enlarged canvas scaled uniformly (16x48 -> 5x16, rows 5-9 of the
    # window, scratch rows above and below); the image's box, rounded inward, is rows 5-9 x columns 6-9
    seen.clear()
    out = tiny_pipe.outpaint(image, PROMPT, pad=(16, 0, 16, 0), mode="fit", generator=seeded(0), output_type="pt")
    out = out.images
    assert out.shape == (1, 3, 16, 48) and torch.equal(out[..., 16:32], image)
    assert len(seen) == 1 and seen[0][0] == (1, 3, 16, 16)
    assert seen[0][1] == 16 * 16 - 5 * 4  # every pixel but the image's box is drawn
    with pytest.raises(ValueError, match="mode"):
        tiny_pipe.outpaint(image, PROMPT, pad=(0, 0, 4, 0), mode="stretch")


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


def test_mask_free_edit_and_intermediates(tiny_pipe):
    image = scene()
    out = tiny_pipe.edit(image, "a blue circle", iterations=8, generator=seeded(0), return_intermediates=True,
                         output_type="pt")  # fmt: skip
    assert out.images.shape == (1, 3, 16, 16) and len(out.intermediates) == 4
    base_ids, _ = encode_stages(tiny_pipe, image)
    assert not torch.equal(out.base_ids, base_ids)


def test_differing_words_are_found(tiny_pipe):
    tokenizer = tiny_pipe.text_encoder.tokenizer
    src, tgt = differing_positions(
        tokenizer, "a red circle on a blue background", "a green circle on a blue background"
    )
    assert len(src) == 1 and len(tgt) == 1
    assert tokenizer.convert_ids_to_tokens(tokenizer("a red circle")["input_ids"])[src[0]] == "red"


def test_region_edit_changes_nothing_outside_the_region(tiny_pipe):
    image = scene()
    source, target = "a red circle on a blue background", "a green circle on a blue background"
    strict = dict(region_threshold=0.99, region_dilation=0)  # a 4x4 grid: keep the region small
    out = tiny_pipe.edit(image, target, source_prompt=source, iterations=6, generator=seeded(0), output_type="pt",
                         **strict)  # fmt: skip
    base_ids, _ = encode_stages(tiny_pipe, image)
    region = edit_region(tiny_pipe, base_ids, source, target, 0.99, 0)
    assert region.any() and not region.all()
    assert torch.equal(out.base_ids[~region], base_ids[~region])
    pixel_region = torch.nn.functional.interpolate(region.float().unsqueeze(1), size=(16, 16)) > 0
    keep = ~pixel_region.expand(1, 3, -1, -1)
    assert torch.equal(out.images[keep], image[keep])
    with pytest.raises(ValueError, match="identical"):
        tiny_pipe.edit(image, source, source_prompt=source, iterations=1)


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def musekit(*args):
    return subprocess.run([sys.executable, "-m", "musekit", *args], capture_output=True, text=True, env=ENV,
                          timeout=180)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit_files")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / "img.png")
    Image.new("RGB", (40, 16), (200, 30, 30)).save(folder / "wide.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 8))
    mask.save(folder / "mask.png")
    Image.new("L", (8, 8), 255).save(folder / "small_mask.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize(
    "args",
    [
        ["inpaint", "{f}/img.png", "a blue star", "--mask", "{f}/mask.png"],
        ["outpaint", "{f}/img.png", "a blue star", "--pad", "0,0,4,0"],
        ["outpaint", "{f}/img.png", "a blue star", "--pad", "8,0,8,0", "--mode", "window"],
        ["edit", "{f}/img.png", "a green circle", "--iterations", "3", "--source-prompt", "a red circle"],
        ["img2img", "{f}/img.png", "a blue star", "--strength", "0.6"],
        ["img2img", "{f}/wide.png", "a blue star", "--strength", "0.6", "--mode", "squash"],
    ],
)
def test_edit_commands_write_images(args, files, tiny_model_dir, tmp_path):
    out = tmp_path / "out.png"
    result = musekit(*[a.format(f=files) for a in args], "--model", str(tiny_model_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file() and str(out) in result.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["inpaint", "{f}/missing.png", "x", "--mask", "{f}/mask.png"], "not found"),
        (["inpaint", "{f}/broken.png", "x", "--mask", "{f}/mask.png"], "cannot read"),
        (["inpaint", "{f}/img.png", "x", "--mask", "{f}/small_mask.png"], "differs from the image size"),
        (["inpaint", "{f}/img.png", "x", "--mask", "{f}/img.png"], "grayscale"),
        (["outpaint", "{f}/img.png", "x", "--pad", "1,2"], "L,T,R,B"),
        (["outpaint", "{f}/img.png", "x", "--pad", "0,0,4,0", "--mode", "stretch"], "fit"),
        (["outpaint", "{f}/img.png", "x", "--pad", "900,900,900,900", "--mode", "window"], "windows"),
        (["img2img", "{f}/img.png", "x", "--strength", "2"], "strength"),
        (["img2img", "{f}/img.png", "x", "--strength", "0.5", "--mode", "fit"], "squash"),
        (["edit", "{f}/img.png", "x", "--iterations", "0"], "positive integer"),
    ],
)
def test_edit_commands_reject_bad_input_in_one_line(args, needle, files, tiny_model_dir, tmp_path):
    result = musekit(
        *[a.format(f=files) for a in args], "--model", str(tiny_model_dir), "--out", str(tmp_path / "o.png")
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_edit_harness_on_tiny_components(tiny_pipe):
    from musekit.config import CheckerConfig
    from musekit.eval.checker import ShapeChecker
    from musekit.eval.edit_eval import EditEvalSettings, evaluate_editing

    torch.manual_seed(0)
    report = evaluate_editing(tiny_pipe, ShapeChecker(CheckerConfig.preset("tiny")), EditEvalSettings(2, 2))
    assert report["inpaint"]["outside_identical"] == 1.0
    inpaint = report["inpaint"]
    assert inpaint["new_object_read"] <= min(inpaint["color_read"], inpaint["shape_read"]) <= 1
    for key in ("edit_random", "edit_region"):
        assert 0 <= report[key]["changed_attribute_read"] <= 1 and report[key]["iterations"] == 2
    img2img = report["img2img"]
    assert img2img["strength"] == 0.5
    assert all(0 <= img2img[key] <= 1 for key in ("prompt_followed", "rest_kept", "one_clean_scene"))


def test_img2img_verdict_reads_follow_keep_and_patchwork():
    from musekit.eval.edit_eval import changed, img2img_verdict, one_object_scenes, scene_values

    source = one_object_scenes(1, 0)[0]
    target = changed(source, 0, "background")
    assert target.background != source.background and target.objects == source.objects
    src, tgt = scene_values(source), scene_values(target)
    redrawn = dict(tgt, count=1)
    assert img2img_verdict(redrawn, source, target, "background") == {"follows": True, "kept": True, "clean": True}
    unchanged = dict(src, count=1)
    assert img2img_verdict(unchanged, source, target, "background") == {"follows": False, "kept": True, "clean": True}
    two_objects = dict(tgt, count=2)
    assert not img2img_verdict(two_objects, source, target, "background")["clean"]
    other = next(c for c in ("red", "blue", "green", "yellow") if c not in (src["color"], tgt["color"]))
    patchwork = dict(tgt, color=other, count=1)  # a colour that is neither the source's nor the prompt's
    verdict = img2img_verdict(patchwork, source, target, "background")
    assert verdict["follows"] and not verdict["kept"] and not verdict["clean"]


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
