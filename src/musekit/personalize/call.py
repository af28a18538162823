"""The state of one pipeline call that uses concepts (prompts encoded once, edited caches per stage)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from musekit.personalize.apply import KEY_LOCKING, ConceptPrompts, concept_cache, encode_concept_prompts
from musekit.personalize.concept import Concept, model_fingerprint


def load_concepts(concepts: list, fingerprint: str) -> list[Concept]:
    loaded = []
    for item in concepts:
        concept = Concept.load(item) if isinstance(item, str | Path) else item
        if not isinstance(concept, Concept):
            raise TypeError("concepts must be Concept objects or concept file paths")
        if concept.fingerprint != fingerprint:
            raise ValueError(
                f"concept {concept.token} was learned on another base model (fingerprint {concept.fingerprint}, "
                f"this model {fingerprint}); learn it again on this model"
            )
        loaded.append(concept)
    tokens = [c.token for c in loaded]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"two concepts use the same token: {tokens}")
    return loaded


@contextmanager
def swapped_weights(pipe, concepts: list[Concept]) -> Iterator[None]:
    """Load the baselines' replaced weights (Custom Diffusion, DreamBooth) for the call; restore them after."""
    from musekit.personalize.concept import stages

    models = stages(pipe)
    saved = {}
    try:
        for concept in concepts:
            for key, value in concept.weights.items():
                stage, name = key.split("::", 1)
                try:
                    param = models[stage].get_parameter(name)
                except AttributeError:
                    raise ValueError(
                        f"concept {concept.token!r} replaces {name}, which this pipeline does not hold as a weight "
                        "(quantized?); use the full-precision pipeline"
                    ) from None
                saved.setdefault((stage, name), param.detach().clone())
                param.data.copy_(value.to(param.dtype))
        yield
    finally:
        for (stage, name), value in saved.items():
            models[stage].get_parameter(name).data.copy_(value)


@dataclass
class ConceptCall:
    concepts: list[Concept]
    prompts: ConceptPrompts
    bias: float
    temperature: float
    key_locking: str

    def cache(self, pipe, model, text, cond_ids, **precompute_kwargs):
        stage = "superres" if model is pipe.superres else "transformer"
        full = getattr(model, "full", model)  # a half-precision model's edits are made in fp32, then cast
        cache = concept_cache(full, stage, text, self.prompts, self.concepts, pipe.perfusion_c_inv()[stage],
                              self.bias, self.temperature, self.key_locking, cond_ids,
                              precompute_kwargs=precompute_kwargs)  # fmt: skip
        return model.cast(cache) if full is not model else cache

    @staticmethod
    @contextmanager
    def context(pipe, prompts, concepts, num_images, bias, temperature, key_locking) -> Iterator[ConceptCall]:
        if key_locking not in KEY_LOCKING:
            raise ValueError(f"key_locking must be one of {KEY_LOCKING}, got {key_locking!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"concept_temperature must be a finite number > 0, got {temperature}")
        if not math.isfinite(bias):
            raise ValueError(f"concept_bias must be a finite number, got {bias}")
        loaded = load_concepts(list(concepts), model_fingerprint(pipe))
        missing = [c.token for c in loaded if not any(c.token in p for p in prompts)]
        if missing:
            raise ValueError(f"the prompt does not use the concept token(s) {missing}")
        expanded = [p for p in prompts for _ in range(num_images)]
        with torch.no_grad():
            encoded = encode_concept_prompts(pipe.text_encoder, expanded, loaded)
        previous = pipe._concept_call
        pipe._concept_call = ConceptCall(loaded, encoded, bias, temperature, key_locking)
        try:
            with swapped_weights(pipe, loaded):
                yield pipe._concept_call
        finally:
            pipe._concept_call = previous
