"""Outpainting: windows at the model's scale, seams, the original kept, huge requests refused."""

import pytest
import torch
import torch.nn.functional as F

from musekit.editing.masks import composite, feathered_alpha
from musekit.editing.outpaint import plan_windows, window_starts

from .conftest import PROMPT, scene, seeded


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
