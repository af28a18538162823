"""The web UI: what it does (``Studio``, no gradio), the page served for real and driven by gradio's client, and
`musekit ui`'s errors."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from musekit.io.metadata import read_record
from musekit.ui.studio import ConceptChoice, Studio, check_image, check_int, mask_from_layers

from .conftest import concept_images
from .test_cli import ENV, musekit

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before any test imports gradio: no calls home


def read_record_of(image):
    return json.loads(image.info["musekit"])


def pixels(images):
    return [np.asarray(image) for image in images]


def test_generate_is_seeded_and_sized(tiny_pipe, tmp_path):
    studio = Studio(tiny_pipe, concept_dir=tmp_path)
    first = studio.generate("a red circle", seed=3, num_images=2, steps=2)
    again = studio.generate("a red circle", seed=3, num_images=2, steps=2)
    other = studio.generate("a red circle", seed=4, num_images=2, steps=2)
    assert len(first.images) == 2 and first.images[0].size == (16, 16)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(first.images), pixels(again.images)))
    assert not all(np.array_equal(a, b) for a, b in zip(pixels(first.images), pixels(other.images)))
    assert "2 image(s), 16x16, seed 3" in first.summary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"num_images": 0}, "number of images must be in [1, 8]"),
        ({"num_images": 2.5}, "whole number"),
        ({"steps": -1}, "steps must be in"),
        ({"seed": None}, "seed is empty"),
        ({"seed": 2**64}, "seed must be in"),
        ({"seed": 3.7}, "seed must be a whole number"),
        ({"concepts": ["missing.safetensors"]}, "concept file not found"),
    ],
)
def test_generate_rejects_bad_input_in_one_line(tiny_pipe, tmp_path, kwargs, message):
    studio = Studio(tiny_pipe, concept_dir=tmp_path)
    with pytest.raises(ValueError, match="^[^\n]*$") as err:
        studio.generate(**{"prompt": "a red circle", **kwargs})
    assert message in str(err.value)


def test_editing_calls_keep_sizes_and_check_masks(tiny_pipe, tmp_path):
    studio = Studio(tiny_pipe, concept_dir=tmp_path)
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 8))
    inpainted = studio.inpaint(image, mask, "a red circle", seed=1).images[0]
    kept = np.asarray(inpainted)[10:, 10:]
    assert inpainted.size == (16, 16) and np.array_equal(kept, np.asarray(image)[10:, 10:])
    assert studio.outpaint(image, "a red circle", right=8, seed=1).images[0].size == (24, 16)
    assert studio.edit(image, "a blue square", iterations=2, seed=1).images[0].size == (16, 16)
    kept = studio.img2img(image, "a blue square", strength=0.0, seed=1).images[0]
    assert kept.size == (16, 16) and studio.img2img(image, "a blue square", strength=1.0).images[0].size == (16, 16)
    with pytest.raises(ValueError, match="strength must be in"):
        studio.img2img(image, "a blue square", strength=1.5)
    with pytest.raises(ValueError, match="mask is empty"):
        studio.inpaint(image, Image.new("L", (16, 16), 0), "a red circle")
    with pytest.raises(ValueError, match="at least one side"):
        studio.outpaint(image, "a red circle")
    with pytest.raises(ValueError, match="mode must be one of window, fit"):
        studio.outpaint(image, "a red circle", right=8, mode="stretch")
    with pytest.raises(ValueError, match="no image"):
        studio.edit(None, "a red circle")


@pytest.mark.parametrize("kind", ["int8", "bf16-linears"])
def test_a_fast_path_studio_generates_and_refuses_to_learn_in_one_line(tiny_text_encoder, tmp_path, kind):
    from musekit.pipeline import MusePipeline

    pipe = MusePipeline.from_configs(tiny_text_encoder, vqgan="tiny", transformer="tiny", superres="tiny", seed=0)
    pipe.progress_bar = False
    studio = Studio(pipe.quantize(kind), concept_dir=tmp_path)
    assert len(studio.generate("a red circle", seed=1).images) == 1
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    pattern = f"^learning concepts needs the full-precision model, and this one runs in {kind}[^\n]*--int8 / --half"
    with pytest.raises(ValueError, match=pattern):
        studio.learn([image], "<emblem>", "square", steps=2)


def test_learned_concept_is_saved_and_usable_by_its_token(concept_pipe, tmp_path):
    studio = Studio(concept_pipe, concept_dir=tmp_path / "concepts")
    images = [Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for image in concept_images()]
    path, summary = studio.learn(images, "<emblem>", "square", steps=2, seed=0)
    assert path == tmp_path / "concepts" / "emblem.safetensors" and path.is_file()
    assert "<emblem>" in summary and "KB" in summary
    result = studio.generate("a <emblem> on a blue background", concepts=["<emblem>"], steps=2)
    assert len(result.images) == 1
    assert read_record_of(result.images[0])["concept"] == [str(path)]  # the file, so the record is re-runnable
    # "put <emblem> here": the editing calls take the same concepts, and their records say so
    mask = Image.new("L", result.images[0].size, 0)
    mask.paste(255, (0, 0, 8, 8))
    choice = ConceptChoice(["<emblem>"], bias=0.9)
    inpainted = studio.inpaint(result.images[0], mask, "a <emblem> at the top left", seed=1, concepts=choice)
    record = read_record_of(inpainted.images[0])
    assert (record["command"], record["concept"], record["bias"]) == ("inpaint", [str(path)], 0.9)
    edited = studio.img2img(result.images[0], "a <emblem>", strength=0.5, concepts=choice)
    assert read_record_of(edited.images[0])["key_locking"] == "local"
    with pytest.raises(ValueError, match="does not use the concept"):
        studio.inpaint(result.images[0], mask, "a red circle", concepts=choice)
    # the UI's editing tabs pass the Generate tab's concepts with only_in_prompt: unused ones are left out
    plain = studio.inpaint(result.images[0], mask, "a red circle", concepts=replace(choice, only_in_prompt=True))
    assert "concept" not in read_record_of(plain.images[0])
    with pytest.raises(ValueError, match="does not use the concept"):
        studio.generate("a red circle", concepts=[str(path)])
    with pytest.raises(ValueError, match="key_locking must be one of"):
        studio.generate("a <emblem>", concepts=["<emblem>"], key_locking="both")
    with pytest.raises(ValueError, match="concept_temperature must be a finite number > 0"):
        studio.generate("a <emblem>", concepts=["<emblem>"], concept_temperature=0.0)
    with pytest.raises(ValueError, match="concept token"):
        studio.learn(images, "emblem", "square", steps=2)
    with pytest.raises(ValueError, match="add images"):
        studio.learn([], "<emblem>", "square", steps=2)


def test_mask_from_editor_layers_and_image_checks(tmp_path):
    background = Image.new("RGB", (16, 16), (0, 0, 255))
    stroke = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    stroke.paste((255, 0, 255, 255), (4, 4, 8, 8))
    mask = np.asarray(mask_from_layers({"background": background, "layers": [stroke, None], "composite": None}))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert mask[4:8, 4:8].all() and mask.sum() == 16 * 255
    with pytest.raises(ValueError, match="no image"):
        mask_from_layers({"background": None, "layers": []})
    transparent = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert check_image(transparent).getpixel((0, 0)) == (255, 255, 255)  # transparent shows as white
    path = tmp_path / "a.png"
    background.save(path)
    assert check_image(str(path)).size == (16, 16)
    with pytest.raises(ValueError, match="image not found"):
        check_image(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        check_image(str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="each side must be 8-4096 px"):
        check_image(Image.new("RGB", (4, 4)))
    assert check_image(np.full((16, 16, 3), 1.0)).getpixel((0, 0)) == (255, 255, 255)  # float arrays are in [0, 1]
    assert check_int("steps", np.int64(3), 1, 8) == 3
    assert check_int("steps", 4.0, 1, 8) == 4
    with pytest.raises(ValueError, match="whole number"):
        check_int("steps", True, 0, 8)


def test_served_page_answers_gradio_client(concept_pipe, tmp_path):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    from musekit.ui.app import serve

    studio = Studio(concept_pipe, concept_dir=tmp_path / "concepts")
    try:
        app = serve(studio, port=None, block=False)
    except OSError as err:  # a sandbox without a loopback port to bind: the environment, not the UI
        pytest.skip(f"cannot serve on a local port here: {err}")
    try:
        client = gradio_client.Client(app.local_url, verbose=False)
        handle = gradio_client.handle_file
        images, text = client.predict("a red circle", "", 3, 2, 2, 2.0, [], [], 0.8, 0.15, "local",
                                      api_name="/generate")  # fmt: skip
        assert len(images) == 2 and "seed 3" in text
        record = read_record(images[1]["image"])  # the PNG the page serves keeps the settings (musekit info)
        assert (record["prompt"], record["seed"], record["num"], record["index"]) == ("a red circle", 3, 2, 1)
        with pytest.raises(Exception, match="prompt is empty"):
            client.predict("", "", 0, 1, 2, 2.0, [], [], 0.8, 0.15, "local", api_name="/generate")
        with pytest.raises(Exception, match="seed is empty"):
            client.predict("a red circle", "", None, 1, 2, 2.0, [], [], 0.8, 0.15, "local", api_name="/generate")
        # inpaint with the image editor's own payload: a background and a layer of painted strokes
        scene, stroke = tmp_path / "scene.png", tmp_path / "stroke.png"
        Image.new("RGB", (16, 16), (0, 0, 255)).save(scene)
        layer = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
        layer.paste((255, 0, 255, 255), (0, 0, 8, 8))
        layer.save(stroke)
        editor = {"background": handle(str(scene)), "layers": [handle(str(stroke))], "composite": None}
        no_concepts = ([], [], 0.8, 0.15, "local")  # the Generate tab's concept inputs, which editing uses too
        result, text = client.predict(editor, "a red circle", 1, *no_concepts, api_name="/inpaint")
        assert Image.open(result).size == (16, 16) and "seed 1" in text
        result, text = client.predict(handle(str(scene)), "a red circle", 0.5, 2, *no_concepts, api_name="/img2img")
        assert Image.open(result).size == (16, 16) and "seed 2" in text
        # learn a concept: the file comes back, the Generate tab's checklist offers it ticked
        shots = []
        for i, image in enumerate(concept_images()):
            shots.append(tmp_path / f"shot{i}.png")
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(shots[-1])
        concept, text, ticks = client.predict([handle(str(p)) for p in shots], "<emblem>", "square", 2, "local", 0,
                                              [], api_name="/learn")  # fmt: skip
        assert concept.endswith("emblem.safetensors") and "learned <emblem>" in text
        assert ticks["value"] == ["<emblem>"] and (tmp_path / "concepts" / "emblem.safetensors").is_file()
        assert not concept.startswith(str(tmp_path / "concepts"))  # a copy is served, never the concept folder
        fresh = gradio_client.Client(app.local_url, verbose=False)  # a new session may name the learned token too
        images, _ = fresh.predict("a <emblem>", "", 0, 1, 2, 2.0, ["<emblem>"], [], 0.8, 0.15, "local",
                                  api_name="/generate")  # fmt: skip
        assert len(images) == 1
        result, _ = fresh.predict(editor, "a <emblem> at the top left", 1, ["<emblem>"], [], 0.8, 0.15, "local",
                                  api_name="/inpaint")  # fmt: skip
        assert read_record(result)["concept"] == [str(tmp_path / "concepts" / "emblem.safetensors")]
        assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
            "/generate", "/inpaint", "/outpaint", "/edit", "/img2img", "/learn"}  # fmt: skip
        with pytest.raises(Exception, match="concept token must look like &lt;name&gt;"):
            client.predict([handle(str(p)) for p in shots], "emblem", "square", 2, "local", 0, [], api_name="/learn")
    finally:
        app.close()


def test_intro_and_examples_fit_the_model(tiny_pipe):
    pytest.importorskip("gradio")
    from musekit.pipeline import DEFAULT_MODEL_DIR
    from musekit.ui.app import OPEN_PROMPTS, SHAPES_PROMPTS, intro_and_examples

    intro, examples = intro_and_examples(tiny_pipe)
    assert examples == OPEN_PROMPTS and "built in memory" in intro and "shapes world" not in intro
    tiny_pipe.world = "shapes"  # e.g. built by `musekit build-pipeline`: the intro names its folder
    tiny_pipe.source_folder = Path("runs/candidate")
    intro, examples = intro_and_examples(tiny_pipe)
    assert examples == SHAPES_PROMPTS and "shapes world" in intro and "runs/candidate" in intro
    tiny_pipe.world, tiny_pipe.source_folder = None, DEFAULT_MODEL_DIR
    intro, examples = intro_and_examples(tiny_pipe)
    assert examples == SHAPES_PROMPTS and "shapes world" in intro and "Model:" not in intro


def test_cli_ui_errors_are_one_line(tmp_path):
    result = musekit("ui", "--port", "70000")
    assert result.returncode == 2 and "--port must be at most 65535" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "file").write_text("")
    result = musekit("ui", "--concept-dir", str(tmp_path / "file"))
    assert result.returncode == 2 and "cannot write concepts to" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = musekit("ui", "--half", "fp16")
    assert result.returncode == 2 and "--half fp16 is a GPU path" in result.stderr
    result = musekit("ui", "--int8", "--half", "fp16")
    assert result.returncode == 2 and "choose one fast path" in result.stderr
    no_gradio = "import sys; sys.modules['gradio'] = None; from musekit.cli.main import main; sys.exit(main(['ui']))"
    result = subprocess.run([sys.executable, "-c", no_gradio], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 2 and "pip install 'musekit[ui]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
