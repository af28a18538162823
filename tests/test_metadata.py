"""Settings records in the PNGs musekit writes: written, read back, turned into a command line, and re-run."""

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from musekit.cli.main import main
from musekit.io.images import save_image
from musekit.io.metadata import (
    KEY,
    attach,
    command_line,
    describe,
    file_fingerprint,
    make_record,
    read_record,
    sampling_record,
)


def test_record_survives_saving_and_reading(tiny_pipe, tmp_path):
    record = make_record(tiny_pipe, "generate", "un cercle rouge « vif »", seed=3, num=2, concept=["a b.safetensors"])
    image = attach(Image.new("RGB", (16, 16), (200, 0, 0)), record, index=1)
    path = save_image(image, tmp_path / "out.png")
    back = read_record(path)
    assert back == {**record, "index": 1, "size": [16, 16]}
    assert back["model_fingerprint"] == record["model_fingerprint"] and back["device"] == "cpu"
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))  # the pixels are untouched


def test_sampling_record_fills_the_models_defaults(tiny_pipe):
    config = tiny_pipe.config
    assert sampling_record(tiny_pipe) == {
        "steps": config.num_inference_steps, "sr_steps": config.sr_inference_steps,
        "guidance": config.guidance_scale, "guidance_schedule": config.guidance_schedule,
        "sr_strength": config.sr_strength,
    }  # fmt: skip
    assert sampling_record(tiny_pipe, steps=7, guidance=1.5)["steps"] == 7


def test_command_line_quotes_and_repeats():
    record = {
        "command": "generate", "prompt": "a red circle's edge", "seed": 3, "negative": None, "concept": ["a.st", "b c"],
        "int8": "all", "device": "cpu", "half": None, "size": [16, 16], "model_fingerprint": "x", "index": 2,
    }  # fmt: skip
    line = command_line(record)
    assert line == "musekit generate 'a red circle'\"'\"'s edge' --seed 3 --concept a.st --concept 'b c' --int8 all"
    outpaint = {"command": "outpaint", "prompt": "sky", "image": None, "pad": [0, 0, 32, 0], "mode": "fit"}
    assert command_line(outpaint) == "musekit outpaint IMAGE sky --pad 0,0,32,0 --mode fit"
    assert "again: musekit generate" in describe(record)


def png_with(tmp_path, text):
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_itxt(KEY, text)
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "holds no musekit settings"),
        ("{not json", "not valid JSON"),
        (json.dumps({"command": "paint", "prompt": "x"}), "not a record musekit can read"),
        (json.dumps([1, 2]), "not a record musekit can read"),
        (json.dumps({"schema": 99, "command": "generate", "prompt": "x", "musekit": "9.0"}), "newer musekit"),
    ],
)
def test_unreadable_records_fail_in_one_line(tmp_path, text, message):
    with pytest.raises(ValueError, match="^[^\n]*$") as err:
        read_record(png_with(tmp_path, text))
    assert message in str(err.value)


def test_generate_from_an_image_makes_it_again(tiny_model_dir, tmp_path, capsys):
    first, again, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    model = ["--model", str(tiny_model_dir), "--quiet"]
    assert main(["generate", "a red circle", "--seed", "5", "--steps", "3", "--out", str(first), *model]) == 0
    record = read_record(first)
    assert (record["prompt"], record["seed"], record["steps"], record["model"]) == (
        "a red circle", 5, 3, str(tiny_model_dir))  # fmt: skip
    assert main(["generate", "--from", str(first), "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert read_record(again) == record
    # a flag given beside --from changes just that setting
    assert main(["generate", "--from", str(first), "--seed", "6", "--out", str(other), "--quiet"]) == 0
    changed = read_record(other)
    assert changed["seed"] == 6 and {k: v for k, v in changed.items() if k != "seed"} == {
        k: v for k, v in record.items() if k != "seed"}  # fmt: skip
    assert main(["info", str(first)]) == 0
    out = capsys.readouterr().out
    assert "generate: a red circle" in out and "again: musekit generate 'a red circle' --seed 5 --steps 3" in out


def test_one_image_of_a_batch_is_made_again_alone(tiny_pipe, tiny_model_dir, tmp_path):
    from musekit.ui.studio import Studio

    studio = Studio(tiny_pipe, concept_dir=tmp_path, model=str(tiny_model_dir))
    batch = studio.generate("a red circle", seed=2, num_images=3, steps=2)
    third = save_image(batch.images[2], tmp_path / "third.png")
    assert read_record(third)["index"] == 2 and read_record(third)["num"] == 3
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(third), "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(batch.images[2]))


def test_editing_outputs_carry_their_command(tiny_model_dir, tmp_path, capsys):
    scene, mask, out = tmp_path / "scene.png", tmp_path / "mask.png", tmp_path / "inpainted.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(scene)
    Image.new("L", (16, 16), 255).save(mask)
    args = ["inpaint", str(scene), "a red circle", "--mask", str(mask), "--model", str(tiny_model_dir)]
    assert main([*args, "--seed", "4", "--out", str(out), "--quiet"]) == 0
    record = read_record(out)
    assert (record["command"], record["image"], record["mask"], record["seed"]) == ("inpaint", str(scene), str(mask), 4)
    assert command_line(record).startswith(f"musekit inpaint {scene} 'a red circle' --seed 4")
    capsys.readouterr()
    assert main(["generate", "--from", str(out)]) == 2
    assert f"was made by `musekit inpaint`: re-run it with `musekit inpaint --from {out}`" in capsys.readouterr().err
    # the editing commands re-run from their records too, pixel for pixel; flags beside --from change just those
    again, other = tmp_path / "again.png", tmp_path / "other.png"
    assert main(["inpaint", "--from", str(out), "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    assert main(["inpaint", "--from", str(out), "--seed", "5", "--out", str(other), "--quiet"]) == 0
    assert {k: v for k, v in read_record(other).items() if k != "seed"} == {
        k: v for k, v in record.items() if k != "seed"}  # fmt: skip
    mask.unlink()
    assert main(["inpaint", "--from", str(out), "--out", str(other)]) == 2
    assert f"the mask {mask} (recorded in {out}) is not there" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["inpaint", "x.png", "a cat"], "--mask is required"),
        (["outpaint", "x.png", "a cat"], "--pad is required"),
        (["img2img", "x.png", "a cat"], "--strength is required"),
        (["edit"], "give an input image and a prompt"),
    ],
)
def test_editing_commands_say_what_is_missing(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_a_ui_upload_record_asks_for_its_input(tiny_pipe, tmp_path, capsys):
    record = make_record(tiny_pipe, "img2img", "a red circle", strength=0.5, seed=2)  # made from an upload
    path = save_image(attach(Image.new("RGB", (16, 16)), record), tmp_path / "ui.png")
    assert main(["img2img", "--from", str(path)]) == 2
    assert "made from an image uploaded to the web UI: give the image file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate"], "give a prompt, --prompts FILE, or --from IMAGE"),
        (["generate", "--from", "missing.png"], "image not found"),
        (["info", "missing.png"], "image not found"),
    ],
)
def test_bad_settings_input_is_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_generate_from_an_image_with_a_lost_concept_file(tiny_model_dir, tmp_path, capsys):
    record = {"schema": 1, "command": "generate", "prompt": "a <x>", "seed": 0, "concept": ["gone.safetensors"]}
    path = tmp_path / "c.png"
    info = PngImagePlugin.PngInfo()
    info.add_itxt(KEY, json.dumps(record))
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)
    assert main(["generate", "--from", str(path), "--model", str(tiny_model_dir)]) == 2
    assert "concept file gone.safetensors (recorded in" in capsys.readouterr().err


def test_ui_settings_fill_every_generate_field(tiny_pipe, tmp_path):
    pytest.importorskip("gradio")
    from musekit.ui.app import GENERATE_FIELDS, generate_settings
    from musekit.ui.studio import Studio

    studio = Studio(tiny_pipe, concept_dir=tmp_path)
    record = make_record(tiny_pipe, "generate", "a red circle", seed=9, num=2, **sampling_record(tiny_pipe, steps=3))
    values, notes = generate_settings(record, studio)
    assert set(values) == set(GENERATE_FIELDS) and notes == []
    assert (values["prompt"], values["seed"], values["num"], values["steps"]) == ("a red circle", 9, 2, 3)
    assert (values["learned"], values["uploaded"], values["key_locking"]) == ([], None, "local")  # nothing stale
    # what the tab cannot hold is named, not dropped silently
    odd = dict(record, num=16, guidance=12.0, top_k=5, concept=[str(tmp_path / "gone.safetensors")], bias=0.8,
               model_fingerprint="elsewhere")  # fmt: skip
    values, notes = generate_settings(odd, studio)
    assert (values["num"], values["guidance"]) == (8, 8.0)
    text = "; ".join(notes)
    for needle in ("num 16 is outside", "guidance 12.0 is outside", "top_k 5", "gone.safetensors is not on this",
                   "another model"):  # fmt: skip
        assert needle in text
    with pytest.raises(ValueError, match="made by inpaint"):
        generate_settings(make_record(tiny_pipe, "inpaint", "x"), studio)


def test_prompts_that_look_like_flags_survive_a_re_run(tiny_model_dir, tmp_path):
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    model = ["--model", str(tiny_model_dir), "--quiet"]
    assert main(["generate", "--out", str(first), "--negative=-h", *model, "--", "-h a red circle"]) == 0
    record = read_record(first)
    assert (record["prompt"], record["negative"]) == ("-h a red circle", "-h")
    assert command_line(record).startswith("musekit generate --negative=-h --seed 0")
    assert main(["generate", "--from", str(first), "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_paths_are_recorded_absolute_so_a_re_run_works_from_anywhere(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a red circle", "--model", "model", "--out", "w/r.png", "--quiet"]) == 0
    assert read_record("w/r.png")["model"] == str(tmp_path / "model")
    monkeypatch.chdir(tmp_path / "w")
    assert main(["generate", "--from", "r.png", "--out", "again.png", "--quiet"]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": None}, "no prompt"),
        ({"size": {}}, "size {}"),
        ({"index": 7, "num": 3}, "index 7 of 3"),
        ({"index": "x", "num": 3}, "index 'x'"),
        ({"schema": "1"}, "schema '1'"),
        ({"seed": [1, 2]}, "seed [1, 2]"),
        ({"concept": "a.safetensors"}, "concept 'a.safetensors'"),
        ({"help": True}, "unknown setting 'help'"),
        ({"index": True, "num": 2}, "index True"),
        ({"seed": -3}, "seed -3"),
        ({"steps": "abc"}, "steps 'abc'"),
        ({"guidance": True}, "guidance True"),
    ],
)
def test_tampered_records_fail_in_one_line(tmp_path, change, message, capsys):
    record = {"schema": 1, "command": "generate", "prompt": "a red circle", "seed": 0, **change}
    path = png_with(tmp_path, json.dumps(record))
    for args in (["info", str(path)], ["generate", "--from", str(path)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "not a record musekit can read" in err


def test_recorded_flags_that_do_not_parse_name_the_image(tmp_path, capsys):
    record = {"schema": 1, "command": "generate", "prompt": "x", "guidance_schedule": "zigzag"}
    path = png_with(tmp_path, json.dumps(record))
    assert main(["generate", "--from", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: its recorded settings are not valid" in err
    assert "--guidance-schedule" in err and "zigzag" in err


def test_from_with_another_num_or_each_says_what_it_does(tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir), "--quiet"]
    grid = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--num", "3", "--each", "--out", str(grid), *model]) == 0
    capsys.readouterr()
    assert main(["generate", "--from", str(tmp_path / "g-2.png"), "--num", "1", "--out", str(tmp_path / "x.png"),
                 "--quiet"]) == 0  # fmt: skip
    assert "is image 2 of 3 made together; with --num 1" in capsys.readouterr().err
    assert main(["generate", "a red circle", "--each", "--out", str(tmp_path / "y.png"), *model]) == 0
    assert "--each writes the images of --num 2 or more" in capsys.readouterr().err


def test_editing_records_print_commands_that_parse(tiny_pipe):
    import shlex

    from musekit.cli.main import build_parser

    record = make_record(tiny_pipe, "inpaint", "a red circle", seed=1)  # an upload in the UI: no files
    line = command_line(record)
    assert line.startswith("musekit inpaint IMAGE 'a red circle'") and "--mask MASK" in line
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert (args.image, args.mask, args.seed) == ("IMAGE", "MASK", 1)
    machine = command_line(dict(record, device="cuda", half="fp16"))  # the editing commands take them too
    args = build_parser().parse_args(shlex.split(machine)[1:])
    assert (args.device, args.half) == ("cuda", "fp16")


def test_info_on_a_concept_file_checks_the_model(tiny_model_dir, tmp_path, capsys):
    import torch

    from musekit.personalize.concept import Concept

    concept = Concept(token="<c>", superclass="red star", variant="global", embedding=torch.zeros(2, 32),
                      target_inputs={}, value_outputs={}, fingerprint="elsewhere")  # fmt: skip
    path = concept.save(tmp_path / "c.safetensors")
    assert main(["info", str(path), "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "concept <c> (Perfusion, global key-locking)" in out and "2 placeholder(s)" in out
    assert f"does not work with {tiny_model_dir}" in out and "learn it again there" in out
    assert main(["info", str(path), "--json", "--no-check"]) == 0
    assert json.loads(capsys.readouterr().out)["superclass"] == "red star"


def test_every_editing_command_re_runs_from_its_record(tiny_model_dir, tmp_path, capsys):
    scene = tmp_path / "scene.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(scene)
    base = [str(scene), "a red circle", "--model", str(tiny_model_dir), "--quiet"]
    for command, extra in (("outpaint", ["--pad", "0,0,8,0", "--mode", "fit"]),
                           ("edit", ["--iterations", "3", "--source-prompt", "a blue square"]),
                           ("img2img", ["--strength", "0.6"])):  # fmt: skip
        first, again, other = (tmp_path / f"{command}-{n}.png" for n in "abc")
        assert main([command, *base, *extra, "--seed", "3", "--out", str(first)]) == 0
        assert main([command, "--from", str(first), "--out", str(again), "--quiet"]) == 0
        assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again))), command
        # a lone positional beside --from is the new prompt
        assert main([command, "--from", str(first), "a green star", "--out", str(other), "--quiet"]) == 0
        assert read_record(other)["prompt"] == "a green star" and read_record(other)["image"] == str(scene)
    record = read_record(tmp_path / "img2img-a.png")
    assert {"steps", "sr_steps", "guidance"} <= {k for k, v in record.items() if v is not None}  # defaults resolved


def test_editing_commands_draw_several_results_and_remake_one_of_them(tiny_model_dir, tmp_path, capsys):
    scene, mask, grid = tmp_path / "scene.png", tmp_path / "mask.png", tmp_path / "grid.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(scene)
    Image.new("L", (16, 16), 255).save(mask)
    args = ["inpaint", str(scene), "a red circle", "--mask", str(mask), "--model", str(tiny_model_dir), "--quiet"]
    assert main([*args, "--num", "3", "--each", "--seed", "2", "--out", str(grid)]) == 0
    assert "3 image(s), seed 2" in capsys.readouterr().out  # one grid of three 16 px results
    singles = [np.asarray(Image.open(tmp_path / f"grid-{k}.png")) for k in (1, 2, 3)]
    assert all(a.shape == (16, 16, 3) for a in singles) and not np.array_equal(singles[0], singles[1])
    assert read_record(tmp_path / "grid-2.png")["index"] == 1 and read_record(grid)["num"] == 3
    again = tmp_path / "again.png"
    assert main(["inpaint", "--from", str(tmp_path / "grid-2.png"), "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), singles[1])  # the batch made again, its image kept
    assert "image 2 of 3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(["img2img", str(scene), "a red circle", "--strength", "0.5", "--num", "65"])
    assert exit.value.code == 2 and "at most 64 images in one call" in capsys.readouterr().err


def test_from_says_when_an_input_file_changed_since(tiny_model_dir, tmp_path, capsys):
    scene = tmp_path / "scene.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(scene)
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    args = ["img2img", str(scene), "a red circle", "--strength", "0.6", "--model", str(tiny_model_dir), "--quiet"]
    assert main([*args, "--out", str(first)]) == 0
    assert read_record(first)["inputs"] == {"image": file_fingerprint(scene)}
    assert main(["img2img", "--from", str(first), "--out", str(again), "--quiet"]) == 0
    assert "changed" not in capsys.readouterr().err  # the same file: no note
    Image.new("RGB", (16, 16), (0, 255, 0)).save(scene)  # the input is replaced
    assert main(["img2img", "--from", str(first), "--out", str(again), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"{first} was made with another image (a file changed since, or another file given)" in err


def test_quantizing_keeps_the_fingerprint_of_the_loaded_weights(tiny_pipe):
    from musekit.io.metadata import weights_fingerprint

    fresh = make_record(tiny_pipe, "generate", "x")["model_fingerprint"]
    tiny_pipe._weights_fingerprint = None  # forget it: quantize must take it from the weights as they are now
    assert weights_fingerprint(tiny_pipe) == fresh
    tiny_pipe._weights_fingerprint = None
    quantized = make_record(tiny_pipe.quantize("int8-all"), "generate", "x")
    assert quantized["model_fingerprint"] == fresh and quantized["int8"] == "all"


def test_a_bf16_linears_pipeline_is_recorded_as_its_flag(tiny_pipe):
    from musekit.io.metadata import machine_record

    assert machine_record(tiny_pipe.quantize("bf16-linears")) == {"int8": None, "device": "cpu", "half": "bf16-linears"}


def test_a_recorded_concept_file_may_take_over_a_token(concept_pipe, tmp_path):
    pytest.importorskip("gradio")
    from musekit.ui.app import generate_settings
    from musekit.ui.studio import Studio

    from .conftest import concept_images

    studio = Studio(concept_pipe, concept_dir=tmp_path / "learned")
    pictures = [Image.fromarray((i.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for i in concept_images()]
    learned, _ = studio.learn(pictures, "<emblem>", "square", steps=1)
    other = tmp_path / "other.safetensors"
    other.write_bytes(learned.read_bytes())
    record = make_record(concept_pipe, "generate", "a <emblem>", concept=[str(other), str(other)])
    values, notes = generate_settings(record, studio)
    assert values["learned"] == ["<emblem>"] and studio.learned["<emblem>"] == other
    assert any(f"<emblem> now names {other} (it named {learned})" in note for note in notes)


@pytest.mark.parametrize("command, option", [("img2img", ["--strength", "0.6"]), ("edit", ["--iterations", "2"])])
def test_records_from_before_windows_remake_their_squashed_image(command, option, tiny_model_dir, tmp_path):
    """A non-square img2img or edit record without a mode was made by squashing (neither had windows then): --from
    makes it again that way, pixel for pixel; new records say which mode made them."""
    scene = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 40, 3), dtype=np.uint8)).save(scene)
    window, squash, old, again = (tmp_path / f"{name}.png" for name in ("window", "squash", "old", "again"))
    args = [command, str(scene), "a red circle", *option, "--model", str(tiny_model_dir), "--quiet"]
    assert main([*args, "--out", str(window)]) == 0 and read_record(window)["mode"] == "window"
    assert main([*args, "--mode", "squash", "--out", str(squash)]) == 0
    record = read_record(squash)
    del record["mode"], record["size"]
    save_image(attach(Image.open(squash).convert("RGB"), record), old)
    assert main([command, "--from", str(old), "--out", str(again), "--quiet"]) == 0
    pixels = lambda path: np.asarray(Image.open(path).convert("RGB"))  # noqa: E731
    assert np.array_equal(pixels(again), pixels(squash)) and not np.array_equal(pixels(window), pixels(squash))
