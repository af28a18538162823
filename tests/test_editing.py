"""Editing: locked tokens, mask polarity, exact composites, inpainting at other sizes, mask-free edits and their
text-only region, the editing commands."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from musekit.editing.inpaint import encode_stages
from musekit.editing.maskfree import differing_positions, edit_region
from musekit.editing.masks import feathered_alpha, token_mask

from .conftest import PROMPT, cli_in_process, quadrant_mask, scene, seeded


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


def test_mask_free_edit_and_intermediates(tiny_pipe):
    image = scene()
    out = tiny_pipe.edit(image, "a blue circle", iterations=8, generator=seeded(0), return_intermediates=True,
                         output_type="pt")  # fmt: skip
    assert out.images.shape == (1, 3, 16, 16) and len(out.intermediates) == 4
    base_ids, _ = encode_stages(tiny_pipe, image)
    assert not torch.equal(out.base_ids, base_ids)


def test_the_last_intermediate_is_the_result(tiny_pipe):
    # 9 iterations, a snapshot every 2: after 2, 4, 6, 8 and the last (before, the image of iteration 8 was returned
    # with the ids of iteration 9)
    out = tiny_pipe.edit(scene(), "a blue circle", iterations=9, intermediate_every=2, generator=seeded(0),
                         return_intermediates=True, output_type="pt")  # fmt: skip
    assert len(out.intermediates) == 5 and torch.allclose(out.intermediates[-1], out.images)
    assert torch.allclose(tiny_pipe.decode(out.ids, "pt"), out.images)


def test_a_non_square_image_is_edited_in_windows_at_the_model_scale(tiny_pipe, monkeypatch):
    """A 40x16 image on a 16 px model: windows at columns 12-27 (the middle, first), then 0-15 and 24-39, each
    seeing what the ones before changed and keeping only its new columns; squash is one pass on the squeezed
    image."""
    import musekit.editing.maskfree as module

    wide = torch.rand(1, 3, 16, 40, generator=seeded(2))
    calls = []
    original = module.edit_loop

    def spy(pipe, base_ids, high_ids, region, *args):
        calls.append((base_ids.clone(), region))
        return original(pipe, base_ids, high_ids, region, *args)

    monkeypatch.setattr(module, "edit_loop", spy)
    out = tiny_pipe.edit(wide, PROMPT, iterations=4, generator=seeded(0), return_intermediates=True,
                         intermediate_every=2, output_type="pt")  # fmt: skip
    assert out.images.shape == (1, 3, 16, 40) and len(calls) == 3
    assert torch.equal(calls[0][0], encode_stages(tiny_pipe, wide[..., 12:28])[0])  # the middle window first
    assert len(out.intermediates) == 2 and torch.allclose(out.intermediates[-1], out.images)
    last = tiny_pipe.decode(out.ids, "pt")  # the last window's ids: its new columns, past the seam's feather
    assert torch.allclose(last[..., 6:], out.images[..., 30:])
    assert not torch.allclose(last[..., :4], out.images[..., 24:28])  # (those columns are the middle window's)
    calls.clear()
    squashed = tiny_pipe.edit(wide, PROMPT, iterations=2, mode="squash", generator=seeded(0), output_type="pt")
    assert len(calls) == 1 and squashed.images.shape == (1, 3, 16, 40)
    with pytest.raises(ValueError, match="mode"):
        tiny_pipe.edit(wide, PROMPT, iterations=2, mode="fit")


def test_a_region_edit_of_a_non_square_image_edits_each_window_s_share_of_the_region(tiny_pipe, monkeypatch):
    # the region is found once on the squeezed image; windows with none of it are not edited, and no pixel outside
    # it changes
    import musekit.editing.maskfree as module

    wide = torch.rand(1, 3, 16, 40, generator=seeded(3))
    source, target = "a red circle on a blue background", "a green circle on a blue background"
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, 1:3, 0] = True  # the leftmost tokens of the squeezed image: the left window only
    monkeypatch.setattr(module, "edit_region", lambda *args: region)
    calls = []
    original = module.edit_loop

    def spy(pipe, base_ids, high_ids, window_region, *args):
        calls.append(window_region)
        return original(pipe, base_ids, high_ids, window_region, *args)

    monkeypatch.setattr(module, "edit_loop", spy)
    out = tiny_pipe.edit(wide, target, source_prompt=source, iterations=3, generator=seeded(0), output_type="pt")
    assert len(calls) == 1 and calls[0].any() and not calls[0].all()
    pixels = module.scale_region(region, (16, 40))[:, None].expand(1, 3, -1, -1)
    assert torch.equal(out.images[~pixels], wide[~pixels])


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
        ["edit", "{f}/wide.png", "a green circle", "--iterations", "2", "--source-prompt", "a red circle"],
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
        (["edit", "{f}/img.png", "x", "--mode", "fit"], "squash"),
    ],
)
def test_edit_commands_reject_bad_input_in_one_line(args, needle, files, tiny_model_dir, tmp_path, capsys):
    args = [*[a.format(f=files) for a in args], "--model", str(tiny_model_dir), "--out", str(tmp_path / "o.png")]
    code, stderr = cli_in_process(capsys, *args)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in stderr, stderr


def test_the_console_script_rejects_a_bad_edit_input_in_one_line(files, tiny_model_dir, tmp_path):
    result = musekit("inpaint", f"{files}/broken.png", "x", "--mask", f"{files}/mask.png", "--model",
                     str(tiny_model_dir), "--out", str(tmp_path / "o.png"))  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read" in lines[0] and "Traceback" not in result.stderr, result.stderr


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
