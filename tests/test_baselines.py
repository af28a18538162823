"""Personalization baselines in the same harness: Textual Inversion, Custom Diffusion, DreamBooth."""

import pytest
import torch

from musekit.personalize.concept import Concept

from .conftest import concept_images as images
from .conftest import seeded


@pytest.mark.parametrize("method", ["textual-inversion", "custom-diffusion", "dreambooth"])
def test_baselines_train_restore_weights_and_generate(concept_pipe, method, tmp_path):
    from musekit.personalize.baselines import learn_baseline

    before = {k: v.clone() for k, v in concept_pipe.superres.state_dict().items()}
    learned = learn_baseline(concept_pipe, images(), f"<{method[:4]}>", "square", method, steps=2, progress=False,
                             prior_images=2)  # fmt: skip
    assert all(torch.equal(v, concept_pipe.superres.state_dict()[k]) for k, v in before.items())
    if method == "textual-inversion":
        assert learned.weights == {}
    else:
        assert learned.weights and all("::" in k for k in learned.weights)
    path = learned.save(tmp_path / "b.safetensors")
    loaded = Concept.load(path)
    assert loaded.method == method and set(loaded.weights) == set(learned.weights)
    assert all(torch.equal(loaded.weights[k], v) for k, v in learned.weights.items())
    assert torch.equal(loaded.embedding, learned.embedding)
    out = concept_pipe(f"a <{method[:4]}>", concepts=[loaded], generator=seeded(0), output_type="ids")
    assert out.ids.shape[0] == 1
    assert all(torch.equal(v, concept_pipe.superres.state_dict()[k]) for k, v in before.items())


def test_dreambooth_prior_follows_the_captions(concept_pipe):
    from musekit.personalize.baselines import learn_baseline

    calls = []
    original = type(concept_pipe).__call__

    def spy(self, prompt, *a, **k):
        calls.append(prompt)
        return original(self, prompt, *a, **k)

    type(concept_pipe).__call__ = spy
    try:
        learn_baseline(concept_pipe, images(2), "<dbc>", "square", "dreambooth", steps=1, progress=False,
                       prior_images=3, captions=["a {} at the left", "a red {} at the top"])  # fmt: skip
    finally:
        type(concept_pipe).__call__ = original
    assert calls[0] == ["a square at the left", "a red square at the top", "a square at the left"]


def test_concepts_on_a_pipeline_whose_base_has_a_tokenizer_of_its_own(tiny_text_encoder):
    """The SR stage of Perfusion and of the baselines trains on re-tokenized base images, as it samples."""
    from musekit.personalize.baselines import learn_baseline

    from .test_pipeline import two_tokenizer_pipe

    pipe = two_tokenizer_pipe(tiny_text_encoder)
    learned = pipe.learn_concept(images(), "<emblem>", "square", steps=2, progress=False)
    dreambooth = learn_baseline(pipe, images(), "<db>", "square", "dreambooth", steps=2, progress=False,
                                prior_images=2)  # fmt: skip
    out = pipe("a <emblem> left of a <db>", concepts=[learned, dreambooth], generator=seeded(0), output_type="ids")
    assert out.ids.shape == (1, 8, 8) and out.base_ids.max() < 12
