"""The shapes world, the checker and the evaluation harness."""

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from musekit.config import CheckerConfig
from musekit.data.drawing import object_coverage, render
from musekit.data.renders import labels_of, object_token_coverage, render_examples
from musekit.data.shapes import (
    COLORS,
    HELDOUT_PAIRS,
    IGNORE,
    PARAPHRASE_COLORS,
    PARAPHRASE_SHAPES,
    ShapesWorld,
    training_vocabulary,
)
from musekit.eval.checker import ShapeChecker, attribute_accuracy, checker_loss
from musekit.eval.metrics import frechet_distance, psnr


def test_deterministic_from_seed():
    a, b = ShapesWorld(3).example("train", 17), ShapesWorld(3).example("train", 17)
    assert a == b and a.caption == b.caption
    assert np.array_equal(np.asarray(render(a.scene, 32)), np.asarray(render(b.scene, 32)))
    assert ShapesWorld(4).example("train", 17) != a


def test_jitter_zero_draws_the_same_scenes_exactly():
    noisy, exact = ShapesWorld(3).examples("train", 30), ShapesWorld(3, jitter=0.0).examples("train", 30)
    assert [e.caption for e in exact] == [e.caption for e in noisy] and all(a == b for a, b in zip(exact, noisy))
    assert all(j == 0.0 for e in exact for j in e.scene.jitter)
    # an exact render depends on the attributes only: the same as a noise-free drawing of the noisy scene
    clean = replace(noisy[0].scene, jitter=(0.0,) * 8)
    assert np.array_equal(np.asarray(render(exact[0].scene, 64)), np.asarray(render(clean, 64)))
    assert not np.array_equal(np.asarray(render(exact[0].scene, 64)), np.asarray(render(noisy[0].scene, 64)))
    with pytest.raises(ValueError, match="jitter"):
        ShapesWorld(0, jitter=2.0)


def test_train_never_contains_heldout_pairs_and_heldout_always_does():
    world = ShapesWorld(0)
    for ex in world.examples("train", 2000):
        assert not {(o.color, o.shape) for o in ex.scene.objects} & HELDOUT_PAIRS
    for ex in world.examples("heldout", 100) + world.examples("heldout2", 100):
        first = ex.scene.objects[0]
        assert (first.color, first.shape) in HELDOUT_PAIRS


def test_canonical_captions():
    world = ShapesWorld(0)
    one = world.example("heldout", 0)
    o = one.scene.objects[0]
    assert one.caption.endswith(f"{o.color} {o.shape} " + ("in the center" if o.position == "center" else
                                f"at the {o.position}") + f" on a {one.scene.background} background".replace(
                                "a orange", "an orange"))  # fmt: skip
    two = world.example("heldout2", 0)
    assert f" {two.scene.relation} " in two.caption


def test_paraphrases_use_only_unseen_words():
    world = ShapesWorld(0)
    vocabulary = training_vocabulary(world, 3000)
    unseen = {w for words in (*PARAPHRASE_COLORS.values(), *PARAPHRASE_SHAPES.values()) for w in words}
    assert not {w.split()[0] for w in unseen} & vocabulary
    for ex in world.examples("paraphrase", 50):
        o = ex.scene.objects[0]
        assert o.color not in ex.caption.split() and o.shape not in ex.caption.split()


def test_labels_and_renders():
    world = ShapesWorld(0)
    examples = world.examples("train", 20)
    images = render_examples(examples, 32)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    labels = labels_of(examples)
    two = labels["count"] == 1
    assert ((labels["relation"] == IGNORE) == ~two).all() and ((labels["size"] == IGNORE) == two).all()


def test_object_coverage_follows_the_render():
    world = ShapesWorld(0)
    flat = [e for e in world.examples("train", 40) if e.scene.background in COLORS and len(e.scene.objects) == 1]
    for ex in flat[:5]:
        image = np.asarray(render(ex.scene, 64)).astype(np.float32)
        cover = object_coverage(ex.scene, 64)
        assert cover.shape == (64, 64) and cover.min() >= 0 and cover.max() <= 1
        inside, outside = image[cover == 1].mean(0), image[cover == 0].mean(0)
        assert np.abs(inside - COLORS[ex.scene.objects[0].color]).max() < 30
        assert np.abs(outside - COLORS[ex.scene.background]).max() < 30
    tokens = object_token_coverage(flat[:5], 64, 16)
    assert tokens.shape == (5, 16, 16) and 0 < (tokens > 0).float().mean() < 0.5
    assert torch.allclose(tokens[0].mean(), torch.tensor(object_coverage(flat[0].scene, 64).mean()), atol=1e-5)


def test_checker_learns_and_reports():
    torch.manual_seed(0)
    checker = ShapeChecker(CheckerConfig.preset("tiny"))
    examples = ShapesWorld(0).examples("train", 16)
    images = render_examples(examples, 32).float() / 255
    labels = labels_of(examples)
    loss = checker_loss(checker(images), labels)
    loss.backward()
    assert all(p.grad is not None for p in checker.parameters())
    acc = attribute_accuracy(checker.predict(images), labels)
    assert set(acc) >= {"color", "shape", "position", "background"} and all(0 <= v <= 1 for v in acc.values())
    assert checker.embed(images).shape == (16, 16)


def test_metrics():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x).item() == pytest.approx(100.0)
    a = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3) == pytest.approx(36.0, rel=1e-3)


def test_eval_harness_on_tiny_components(tiny_pipe):
    from musekit.eval.shapes_eval import EvalSettings, evaluate_shapes

    torch.manual_seed(0)
    checker = ShapeChecker(CheckerConfig.preset("tiny"))
    report, grid = evaluate_shapes(tiny_pipe, checker, EvalSettings(num_prompts=4, batch_size=4), progress=False)
    for split in ("heldout", "heldout2", "paraphrase"):
        assert 0 <= report[split]["full_prompt"] <= 1
        # every prompt not fully right is listed with what was read instead
        assert len(report[split]["misses"]) == round((1 - report[split]["full_prompt"]) * 4)
        assert all(m["prompt"] and m["read"] for m in report[split]["misses"])
    assert set(report["heldout"]["shape_by_size"]) <= {"small", "large"} and "shape_by_size" not in report["heldout2"]
    assert report["seconds_per_image"] > 0 and report["fsd"] >= 0
    assert "psnr_final" in report["tokenizer"] and grid.shape[1:] == (3, 16, 16)


def test_unknown_words_are_those_no_training_caption_uses():
    from musekit.data.shapes import ShapesWorld, caption, unknown_words, vocabulary

    rng = np.random.default_rng(0)
    world = ShapesWorld(0)
    for index in range(200):  # every training caption is inside the vocabulary
        assert unknown_words(caption(world.example("train", index).scene, rng)) == []
    words = unknown_words("A Crimson ring, a <emblem> and a crimson box in the centre")
    assert words == ["crimson", "ring", "and", "box", "centre"]
    assert unknown_words("a naïve café circle 3d") == ["naïve", "café", "d"]
    assert {"red", "triangle", "checkered", "above", "upper"} <= vocabulary()
    assert not {"crimson", "scarlet", "azure", "ring", "box"} & vocabulary()  # the paraphrase words stay unseen


def test_prompt_notes_name_unseen_words_and_a_missing_shape():
    from musekit.data.shapes import ShapesWorld, caption, names_an_object, prompt_notes

    rng = np.random.default_rng(0)
    world = ShapesWorld(0)
    for index in range(200):  # no note for any training caption
        assert prompt_notes(caption(world.example("train", index).scene, rng)) == []
    assert names_an_object("a <emblem> on a blue background") and names_an_object("A Big HEART")
    assert not names_an_object("a blue background") and not names_an_object("circles")  # whole words only
    (note,) = prompt_notes("a large blue background")
    assert note.startswith("the prompt names no shape (circle, square")
    unseen, no_shape = prompt_notes("a crimson ring")
    assert "never saw 'crimson', 'ring'" in unseen and "names no shape" in no_shape


def test_left_out_names_what_a_prompt_leaves_out_of_a_whole_caption():
    from musekit.data.shapes import ShapesWorld, caption, left_out, prompt_notes

    rng = np.random.default_rng(0)
    assert all(left_out(caption(ShapesWorld(0).example("train", i).scene, rng)) == [] for i in range(300))
    assert left_out("a red circle") == ["size", "position", "background"]
    assert left_out("a star above a green heart") == ["colour", "background"]  # "green" is the heart's
    assert left_out("a big cross in the upper part on an orange background") == ["colour"]  # orange: the background's
    assert left_out("a <emblem> at the top left on a blue background") == []  # a concept brings its colour
    assert left_out("a blue background") == []  # no shape: prompt_notes says so instead
    (note,) = prompt_notes("a yellow star above a green heart")
    assert note.startswith("the prompt leaves out the background: the model learned from whole captions")


def test_partial_captions_name_every_shape_and_leave_out_the_rest_at_random():
    from musekit.data.shapes import SHAPES, ShapesWorld, caption, partial_caption_and_names, unknown_words
    from musekit.training.config import TrainConfig

    world = ShapesWorld(0)
    full, partial = np.random.default_rng(1), np.random.default_rng(1)
    scenes = [world.example("train", index).scene for index in range(300)]
    assert [caption(s, full) for s in scenes] == [caption(s, partial, 0.0) for s in scenes]  # off: as before
    rng, left_out = np.random.default_rng(0), set()
    for scene in scenes:
        text, names = partial_caption_and_names(scene, rng)
        words = re.findall(r"[a-z]+", text)
        assert unknown_words(text) == [] and all(obj.shape in words for obj in scene.objects)
        assert sum(w in SHAPES for w in words) == len(scene.objects)
        assert (scene.background in words) == ("background" in names)
        assert (scene.objects[0].color in words) >= ("color" in names)
        left_out |= {"size", "color", "position", "background"} - names if scene.relation is None else set()
    assert left_out == {"size", "color", "position", "background"}
    rng = np.random.default_rng(0)
    texts = [caption(s, rng, 0.3) for s in scenes]
    shares = sum("background" not in t for t in texts) / len(texts)
    assert 0.05 < shares < 0.3  # about 0.3 x 1/2 of the captions leave the background out
    with pytest.raises(Exception, match="partial_captions must be in"):
        TrainConfig(partial_captions=1.5)
