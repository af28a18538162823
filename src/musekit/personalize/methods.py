"""The Perfusion methods of ``MusePipeline`` (C and its inverse, learning a concept, calls with concepts), each a
thin entry point into ``musekit.personalize``."""

from __future__ import annotations

import torch

from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE


class PersonalizationMethods:
    """Mixed into ``MusePipeline``."""

    def perfusion_c_inv(self) -> dict[str, torch.Tensor]:
        """C^-1 per stage for Perfusion: loaded from the model folder, or estimated once from shapes captions."""
        if self._c_inv is None:
            from musekit.personalize.covariance import covariances_for

            self.set_covariances(covariances_for(self))
        return self._c_inv

    def estimate_covariance(self, captions: list[str] | None = None, count: int = 2000) -> None:
        """Estimate Perfusion's C for every stage from ``captions`` (default: shapes-world training captions)."""
        from musekit.personalize.covariance import estimate_pipeline_covariances

        self.set_covariances(estimate_pipeline_covariances(self, captions, count))

    def set_covariances(self, covariances: dict[str, torch.Tensor], ridge: float = 1e-6) -> None:
        """Use these C (per stage); ``ridge`` is added relative to C's mean eigenvalue before inverting."""
        from musekit.personalize.covariance import inverse

        self._covariances = covariances
        self._c_inv = {k: inverse(v, ridge).to(self.device) for k, v in covariances.items()}

    def learn_concept(self, images: list, token: str, superclass: str, steps: int | None = None,
                      variant: str = "local", **kwargs):  # fmt: skip
        """Learn a Perfusion concept from a few images (see ``musekit.personalize.trainer``).

        Args:
            images: 1-10 PIL images (or tensors) of the concept.
            token: the new word, e.g. "<emblem>".
            superclass: what the concept is, a word or a phrase of up to 3 words, e.g. "square", or "red square"
                for a model that reads colour and shape from separate words, as the bundled one does. The concept
                gets one placeholder per piece of it, each key-locked to its own piece.
            variant: "local", "global" (same training; differs at inference) or "trained-k" (the ablation).

        Returns:
            a ``Concept``; ``concept.save(path)`` writes the concept file.
        """
        from musekit.personalize.trainer import learn_concept

        self._require_full_precision("learn_concept")
        return learn_concept(self, images, token, superclass, steps, variant, **kwargs)

    def using_concepts(self, prompt, concepts, num_images_per_prompt=1, bias=DEFAULT_BIAS,
                       temperature=DEFAULT_TEMPERATURE, key_locking="local"):  # fmt: skip
        """Context manager: calls inside it use ``concepts`` (encodings, key-locking and the edited K/V caches)."""
        from musekit.personalize.call import ConceptCall

        return ConceptCall.context(self, self.check_prompts(prompt), concepts, num_images_per_prompt, bias,
                                   temperature, key_locking)  # fmt: skip
