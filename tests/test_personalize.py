"""Perfusion on the masked transformers: training touches exactly the intended tensors, concept files, inference."""

import pytest
import torch

from musekit.personalize.apply import installed_edits
from musekit.personalize.concept import Concept
from musekit.personalize.rank_one import RankOneEdit
from musekit.personalize.tokens import superclass_ids
from musekit.personalize.trainer import PersonalizeConfig

from .conftest import concept_images as images
from .conftest import seeded


@pytest.fixture(scope="module")
def concept(concept_pipe):
    return concept_pipe.learn_concept(images(), "<emblem>", "square", steps=3, progress=False)


def test_training_updates_exactly_the_intended_tensors(concept_pipe, monkeypatch):
    import musekit.personalize.trainer as trainer

    seen = {}

    class Recorder(torch.optim.AdamW):
        def step(self, closure=None):
            seen["params"] = [p for group in self.param_groups for p in group["params"]]
            seen["lrs"] = [group["lr"] for group in self.param_groups]
            seen["grads"] = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in seen["params"]]
            return super().step(closure)

    monkeypatch.setattr(trainer.torch.optim, "AdamW", Recorder)
    before = {k: v.clone() for k, v in concept_pipe.transformer.state_dict().items()}
    text_before = {k: v.clone() for k, v in concept_pipe.text_encoder.state_dict().items()}
    concept_pipe.learn_concept(images(), "<probe>", "square", steps=2, variant="trained-k", progress=False)
    # the embedding, then o*_V and o*_K per stage; every one of them got a gradient; separate learning rates
    assert len(seen["params"]) == 1 + 2 * 2 and all(seen["grads"])
    assert seen["lrs"] == [PersonalizeConfig().embedding_lr, PersonalizeConfig().output_lr]
    model_params = {id(p) for m in concept_pipe.modules().values() for p in m.parameters()}
    assert not model_params & {id(p) for p in seen["params"]}
    assert all(not p.requires_grad and p.grad is None for m in concept_pipe.modules().values() for p in m.parameters())
    assert all(torch.equal(v, concept_pipe.transformer.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, concept_pipe.text_encoder.state_dict()[k]) for k, v in text_before.items())


def test_concept_file_round_trip_size_and_fingerprint(concept, concept_pipe, tmp_path):
    path = concept.save(tmp_path / "emblem.safetensors")
    assert path.stat().st_size < 100_000
    loaded = Concept.load(path)
    assert (loaded.token, loaded.superclass, loaded.variant) == ("<emblem>", "square", "local")
    assert torch.allclose(loaded.embedding, concept.embedding, atol=1e-2)
    assert set(loaded.value_outputs) == {"transformer", "superres"}
    assert loaded.value_outputs["transformer"].shape == (len(concept_pipe.transformer.blocks), 1, 32)  # 1 piece
    other = type(concept_pipe).from_configs(concept_pipe.text_encoder, seed=1)
    with pytest.raises(ValueError, match="another base model"):
        other("a <emblem>", concepts=[path])
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a concept file"):
        Concept.load(tmp_path / "junk.safetensors")


def test_generation_with_concepts_and_exact_removal(concept_pipe, concept):
    plain = concept_pipe("a square", generator=seeded(0), output_type="ids").ids
    used = concept_pipe("a <emblem> on a blue background", concepts=[concept], generator=seeded(0), output_type="pt")
    assert used.images.shape == (1, 3, 16, 16)
    for model in (concept_pipe.transformer, concept_pipe.superres):
        assert not any(isinstance(a.to_k, RankOneEdit) or isinstance(a.to_v, RankOneEdit)
                       for a in model.cross_attentions)  # fmt: skip
    assert torch.equal(plain, concept_pipe("a square", generator=seeded(0), output_type="ids").ids)
    glob = concept_pipe("a <emblem>", concepts=[concept], key_locking="global", generator=seeded(0))
    assert len(glob.images) == 1
    with pytest.raises(ValueError, match="does not use"):
        concept_pipe("a square", concepts=[concept])
    with pytest.raises(ValueError, match="key_locking"):
        concept_pipe("a <emblem>", concepts=[concept], key_locking="both")


def test_bias_changes_the_cached_values_without_retraining(concept_pipe, concept):
    from musekit.personalize.call import ConceptCall

    caches = []
    for bias in (0.3, 0.9):
        with ConceptCall.context(concept_pipe, ["a <emblem>"], [concept], 1, bias, 0.15, "local") as call:
            text = concept_pipe.encode_prompt(["a <emblem>"], None, 1, 4.0)
            caches.append(call.cache(concept_pipe, concept_pipe.transformer, text, None))
    assert not torch.allclose(caches[0].values[0], caches[1].values[0])


def test_every_entry_point_defaults_to_the_same_gate():
    """The pipeline, its concept context, the rank-one target, the CLI and the eval share one default bias and tau."""
    import argparse
    import inspect

    from musekit.cli.generate import add_parser, settings_from
    from musekit.eval.personalize_eval import PersonalizeEvalSettings
    from musekit.personalize.methods import PersonalizationMethods
    from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE, ConceptTarget
    from musekit.pipeline import MusePipeline

    call = inspect.signature(MusePipeline.__call__).parameters
    assert (call["concept_bias"].default, call["concept_temperature"].default) == (DEFAULT_BIAS, DEFAULT_TEMPERATURE)
    context = inspect.signature(PersonalizationMethods.using_concepts).parameters
    assert (context["bias"].default, context["temperature"].default) == (DEFAULT_BIAS, DEFAULT_TEMPERATURE)
    target = ConceptTarget(torch.zeros(2), torch.zeros(2))
    assert (target.beta, target.tau) == (DEFAULT_BIAS, DEFAULT_TEMPERATURE)
    assert PersonalizeEvalSettings.default_beta == DEFAULT_BIAS
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["generate", "a <emblem>"])
    settings_from(args)  # unset flags take the defaults here (they stay None until then, for --from)
    assert (args.bias, args.temperature) == (DEFAULT_BIAS, DEFAULT_TEMPERATURE)
    from musekit.ui.studio import ConceptChoice

    assert (ConceptChoice().bias, ConceptChoice().temperature) == (DEFAULT_BIAS, DEFAULT_TEMPERATURE)


def test_two_concepts_in_one_prompt(concept_pipe, concept):
    second = concept_pipe.learn_concept(images(3), "<badge>", "circle", steps=2, progress=False)
    out = concept_pipe("a <emblem> left of a <badge>", concepts=[concept, second], generator=seeded(0))
    assert len(out.images) == 1


def test_several_concepts_are_encoded_each_without_the_others_embeddings(concept_pipe, concept):
    """With two concepts, each concept's placeholders hold their encoding in the prompt where the other concept is
    its superclass, and every other token holds the superclass prompt's encoding; one concept is unchanged."""
    from musekit.personalize.apply import encode_concept_prompts

    encoder = concept_pipe.text_encoder
    second = concept_pipe.learn_concept(images(3), "<badge>", "red circle", steps=2, progress=False)
    prompts = ["a <emblem> left of a <badge> on a blue background", "an <badge> above a <emblem>", "a <emblem> here"]
    both = encode_concept_prompts(encoder, prompts, [concept, second])
    mixed = encode_concept_prompts(encoder, prompts, [concept, second], isolate=False)
    alone_emblem = encode_concept_prompts(encoder, [p.replace("a <badge>", "a red circle").replace(
        "an <badge>", "a red circle") for p in prompts], [concept])  # fmt: skip
    alone_badge = encode_concept_prompts(encoder, [p.replace("<emblem>", "square") for p in prompts], [second])
    emblem = both.positions["<emblem>"].any(0)
    badge = both.positions["<badge>"].any(0)
    assert int(emblem.sum()) == 3 and int(badge.sum()) == 4  # "red circle": two placeholders per prompt
    hidden = both.text.hidden_states
    assert torch.allclose(hidden[emblem], alone_emblem.text.hidden_states[emblem], atol=1e-6)
    assert torch.allclose(hidden[badge], alone_badge.text.hidden_states[badge], atol=1e-6)
    rest = ~(emblem | badge)
    assert torch.allclose(hidden[rest], both.super_text.hidden_states[rest], atol=1e-6)
    assert torch.equal(both.text.attention_mask, both.super_text.attention_mask)
    assert torch.equal(both.text.pooled, mixed.text.pooled)  # the pooled vector stays the whole prompt's
    assert not torch.allclose(hidden[emblem], mixed.text.hidden_states[emblem], atol=1e-4)  # the encoder mixes them
    single = encode_concept_prompts(encoder, ["a <emblem> at the top"], [concept])
    single_mixed = encode_concept_prompts(encoder, ["a <emblem> at the top"], [concept], isolate=False)
    assert torch.equal(single.text.hidden_states, single_mixed.text.hidden_states)


def test_multi_piece_superclass(concept_pipe):
    pieces = superclass_ids(concept_pipe.text_encoder, "pentagram")
    assert len(pieces) > 1
    learned = concept_pipe.learn_concept(images(), "<penta>", "pentagram", steps=2, progress=False)
    out = concept_pipe("a <penta> at the top", concepts=[learned], key_locking="global", generator=seeded(0))
    assert len(out.images) == 1
    with pytest.raises(ValueError, match="at most 3 words"):
        concept_pipe.learn_concept(images(), "<x>", "a big red square", steps=1, progress=False)


def test_phrase_superclass_gives_one_placeholder_per_piece_locked_to_its_own_key(concept_pipe):
    """A colour-and-shape superclass ("red square"): the concept gets two placeholders, the prompt with the superclass
    in the concept's place has the same positions, and under local key-locking each placeholder's key target is its
    own word's key in that prompt (the colour's and the shape's; not the background's "red")."""
    from musekit.personalize.apply import encode_concept_prompts, local_key_targets
    from musekit.personalize.tokens import expand_tokens, piece_tokens

    encoder = concept_pipe.text_encoder
    red, square = superclass_ids(encoder, "red"), superclass_ids(encoder, "square")
    assert superclass_ids(encoder, " red   square ") == red + square
    learned = concept_pipe.learn_concept(images(), "<redsq>", "red  square", steps=2, progress=False)
    assert learned.superclass == "red square" and learned.pieces == 2
    assert learned.embedding.shape[0] == 2 and learned.value_outputs["transformer"].shape[1] == 2
    assert piece_tokens("<redsq>", 2) == ["<redsq#0>", "<redsq#1>"]
    assert expand_tokens(["a <redsq> here"], "<redsq>", 2) == ["a <redsq#0> <redsq#1> here"]
    prompt = "a <redsq> on a red background"
    encoded = encode_concept_prompts(encoder, [prompt], [learned])
    model = concept_pipe.transformer
    phrase = encoder.encode(["a red square on a red background"])
    tokens = encoder.tokenize(["a red square on a red background"])[0][0].tolist()
    start = tokens.index(red[0])
    context = model.project_text(phrase)[0][0]
    for piece in range(2):
        where = encoded.positions["<redsq>"][piece]
        assert where[0, start + piece] and int(where.sum()) == 1
        keys = local_key_targets(model, encoded.super_text, where, 1)
        for attn, key in zip(model.text_attentions, keys):
            assert torch.allclose(key[0], attn.to_k.weight @ context[start + piece], atol=1e-5)
    out = concept_pipe("a <redsq> at the top", concepts=[learned], generator=seeded(0))
    assert len(out.images) == 1
    one_piece = Concept(**{**learned.__dict__, "embedding": learned.embedding[:1]})
    with pytest.raises(ValueError, match="learn it again"):
        concept_pipe("a <redsq> at the top", concepts=[one_piece], generator=seeded(0))


def test_substitute_makes_the_article_agree_with_the_superclass():
    from musekit.personalize.tokens import substitute

    prompts = ["a <c> at the top", "An <c> left of a <c>", "the <c>", "a <cat> and a <c>"]
    assert substitute(prompts, "<c>", "orange circle") == [
        "an orange circle at the top",
        "An orange circle left of an orange circle",
        "the orange circle",
        "a <cat> and an orange circle",
    ]
    assert substitute(["an <c> here"], "<c>", "red circle") == ["a red circle here"]


def test_piece_positions_match_the_whole_phrase_only():
    from musekit.personalize.tokens import piece_positions

    assert piece_positions([1, 5, 6, 2, 5, 7, 5, 6], [5, 6]) == [1, 2, 6, 7]
    assert piece_positions([1, 5, 2], [5]) == [1]
    assert piece_positions([1, 2], [3, 4]) == []


def test_concepts_in_editing(concept_pipe, concept):
    image = torch.rand(1, 3, 16, 16, generator=seeded(3))
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :8, :8] = True
    out = concept_pipe.inpaint(image, mask, "put a <emblem> here", concepts=[concept], generator=seeded(0),
                               output_type="pt")  # fmt: skip
    keep = ~mask.expand(1, 3, -1, -1)
    assert torch.equal(out.images[keep], image[keep])


def test_region_edit_with_a_phrase_concept_locates_its_superclass(concept_pipe, monkeypatch):
    """Mask-free region editing with a concept: the changed words are located through the concept's superclass (the
    plain encoder does not know its placeholders), so "<redsq2>" is located as "red square"."""
    import musekit.editing.maskfree as maskfree

    learned = concept_pipe.learn_concept(images(), "<redsq2>", "red square", steps=1, progress=False)
    seen = []
    original = maskfree.differing_positions
    monkeypatch.setattr(maskfree, "differing_positions",
                        lambda tok, a, b: seen.append((a, b)) or original(tok, a, b))  # fmt: skip
    image = torch.rand(1, 3, 16, 16, generator=seeded(4))
    out = concept_pipe.edit(image, "a <redsq2> at the top", source_prompt="a circle at the top", concepts=[learned],
                            iterations=2, generator=seeded(0), output_type="pt")  # fmt: skip
    assert seen == [("a circle at the top", "a red square at the top")]
    assert out.images.shape == (1, 3, 16, 16)


def test_a_decoding_step_costs_the_same_with_concepts(concept_pipe, concept, monkeypatch):
    calls = {"edits": 0}
    original = RankOneEdit.forward

    def counted(self, e):
        calls["edits"] += 1
        return original(self, e)

    monkeypatch.setattr(RankOneEdit, "forward", counted)
    concept_pipe("a <emblem>", concepts=[concept], num_inference_steps=5, generator=seeded(0), output_type="ids")
    layers = len(concept_pipe.transformer.blocks) + len(concept_pipe.superres.blocks)
    assert calls["edits"] == 2 * layers  # K and V edited once per call (into the cache), never per step


def test_installed_edits_restore_on_error(concept_pipe):
    model = concept_pipe.transformer
    originals = [(a.to_k, a.to_v) for a in model.cross_attentions]
    c_inv = torch.eye(32, dtype=torch.float64)
    with pytest.raises(RuntimeError), installed_edits(model, c_inv, [[]] * 2, [[]] * 2):
        raise RuntimeError("boom")
    assert [(a.to_k, a.to_v) for a in model.cross_attentions] == originals


def test_personalize_and_generate_cli(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 200, 30)).save(tmp_path / f"c{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "musekit", *a], capture_output=True, text=True, env=env)  # noqa: E731
    concept = tmp_path / "star.safetensors"
    pictures = [str(tmp_path / "c0.png"), str(tmp_path / "c1.png")]
    result = run("personalize", *pictures, "--token", "<mystar>", "--superclass", "star", "--steps", "2",
                 "--model", str(tiny_model_dir), "--out", str(concept))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert concept.is_file() and "KB" in result.stdout
    out = tmp_path / "g.png"
    result = run("generate", "a <mystar> at the top", "--concept", str(concept), "--bias", "0.6", "--temperature",
                 "0.2", "--key-locking", "global", "--model", str(tiny_model_dir), "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = run("info", str(concept), "--model", str(tiny_model_dir))
    assert info.returncode == 0 and "concept <mystar> (Perfusion, local key-locking)" in info.stdout
    assert f"works with {tiny_model_dir}" in info.stdout and "superclass 'star'" in info.stdout
    # "put <mystar> here": the editing commands take concepts too, and record them
    from musekit.io.metadata import read_record

    mask, inpainted = tmp_path / "m.png", tmp_path / "i.png"
    Image.new("L", (16, 16), 255).save(mask)
    edit = ["inpaint", str(out), "a <mystar> at the top", "--mask", str(mask), "--model", str(tiny_model_dir)]
    result = run(*edit, "--concept", str(concept), "--bias", "0.7", "--out", str(inpainted))
    assert result.returncode == 0, result.stderr
    assert (read_record(inpainted)["concept"], read_record(inpainted)["bias"]) == ([str(concept)], 0.7)
    several = tmp_path / "several.png"  # and several results at once, each recording its concept and place
    result = run(*edit, "--concept", str(concept), "--num", "2", "--each", "--out", str(several))
    assert result.returncode == 0, result.stderr
    for index in (1, 2):
        record = read_record(tmp_path / f"several-{index}.png")
        assert (record["concept"], record["num"], record["index"]) == ([str(concept)], 2, index - 1)  # 0-based
    bad = run(*edit, "--concept", str(tmp_path / "gone.safetensors"), "--out", str(inpainted))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "gone.safetensors" in bad.stderr
    bad = run("personalize", str(tmp_path / "c0.png"), "--token", "emblem", "--superclass", "star",
              "--model", str(tiny_model_dir), "--out", str(tmp_path / "x.safetensors"))  # fmt: skip
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "<name>" in bad.stderr
    for captions in (["a {} at the top"], ["a {} at the top", "a circle"]):
        bad = run("personalize", *pictures, "--token", "<mystar>", "--superclass", "star", "--model",
                  str(tiny_model_dir), "--out", str(tmp_path / "y.safetensors"),
                  *[x for c in captions for x in ("--caption", c)])  # fmt: skip
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "--caption" in bad.stderr
    captioned = tmp_path / "cap.safetensors"
    result = run("personalize", *pictures, "--token", "<mystar>", "--superclass", "star", "--steps", "1",
                 "--model", str(tiny_model_dir), "--out", str(captioned), "--caption", "a {} at the left",
                 "--caption", "a small <mystar> at the top")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert captioned.is_file()


def test_captions_mirror_with_the_views_and_drive_training(concept_pipe, monkeypatch):
    import musekit.personalize.trainer as trainer
    from musekit.personalize.trainer import mirrored_caption, view_captions

    assert (
        mirrored_caption("a {} at the top left, right of a leftover box")
        == "a {} at the top right, left of a leftover box"
    )
    views = view_captions(["a {} at the left", "a <c> in the center"], "<c>", crops=1)
    assert views == ["a <c> at the left", "a <c> at the right", "a <c> at the left"] + ["a <c> in the center"] * 3
    with pytest.raises(ValueError, match="does not mention"):
        view_captions(["a circle"], "<c>", crops=0)
    with pytest.raises(ValueError, match="one per image"):
        concept_pipe.learn_concept(images(2), "<cap>", "square", steps=1, progress=False, captions=["a {}"])
    seen = []
    encode = trainer.encode_concept_prompts
    monkeypatch.setattr(trainer, "encode_concept_prompts", lambda enc, prompts, concepts: seen.extend(prompts) or
                        encode(enc, prompts, concepts))  # fmt: skip
    captions = ["a big {} at the top left", "a small {} at the bottom"]
    concept_pipe.learn_concept(images(2), "<cap>", "square", steps=2, progress=False, captions=captions)
    allowed = set(view_captions(captions, "<cap>", PersonalizeConfig().crops_per_image))
    assert seen and set(seen) <= allowed and "a big <cap> at the top right" in allowed


def test_stored_input_is_the_final_embeddings_mean_encoding_and_the_last_steps_settle(concept_pipe, monkeypatch):
    """i* must follow the embedding it was trained with: the stored i* is the concept token's mean encoding over the
    training prompts with the final embedding (s = 1 there on average), and the settle steps train o* alone."""
    import musekit.personalize.trainer as trainer
    from musekit.personalize.tokens import encode_with_concepts, register_pieces
    from musekit.personalize.trainer import view_captions

    lrs = []

    class Recorder(torch.optim.AdamW):
        def step(self, closure=None):
            lrs.append([group["lr"] for group in self.param_groups])
            assert (self.param_groups[0]["params"][0].grad is None) == (self.param_groups[0]["lr"] == 0.0)
            return super().step(closure)

    monkeypatch.setattr(trainer.torch.optim, "AdamW", Recorder)
    captions = ["a big {} at the top left", "a small {} at the bottom"]
    config = PersonalizeConfig(steps=4, settle_fraction=0.5)
    learned = concept_pipe.learn_concept(images(2), "<settle>", "square", config=config, progress=False,
                                         captions=captions)  # fmt: skip
    assert [lr[0] for lr in lrs] == [config.embedding_lr] * 2 + [0.0] * 2
    assert all(lr[1] == config.output_lr for lr in lrs)
    encoder = concept_pipe.text_encoder
    (token_id,) = register_pieces(encoder, "<settle>", 1)
    prompts = view_captions(captions, "<settle>", config.crops_per_image)
    with torch.no_grad():
        text, ids = encode_with_concepts(encoder, prompts, {token_id: learned.embedding[0]})
        for stage, model in (("transformer", concept_pipe.transformer), ("superres", concept_pipe.superres)):
            expected = model.project_text(text)[0][ids == token_id].mean(0)
            torch.testing.assert_close(learned.target_inputs[stage][0], expected, rtol=2e-3, atol=2e-3)  # fp16


def test_a_reloaded_concept_draws_the_same_images(concept_pipe, concept, tmp_path):
    loaded = Concept.load(concept.save(tmp_path / "same.safetensors"))
    assert torch.equal(loaded.embedding, concept.embedding)
    for stage in concept.target_inputs:
        assert torch.equal(loaded.target_inputs[stage], concept.target_inputs[stage])
        assert torch.equal(loaded.value_outputs[stage], concept.value_outputs[stage])
    a = concept_pipe("a <emblem>", concepts=[concept], generator=seeded(3), output_type="ids").ids
    b = concept_pipe("a <emblem>", concepts=[loaded], generator=seeded(3), output_type="ids").ids
    assert torch.equal(a, b)


def test_debiased_moving_average_starts_at_the_first_value():
    from musekit.personalize.trainer import _debiased

    average, values = torch.zeros(3), [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])]
    average.lerp_(values[0], 0.01)
    torch.testing.assert_close(_debiased(average, 0.99, 1), values[0])
    average.lerp_(values[1], 0.01)
    weights = torch.tensor([0.99 * 0.01, 0.01]) / (1 - 0.99**2)
    torch.testing.assert_close(_debiased(average, 0.99, 2), weights[0] * values[0] + weights[1] * values[1])
