"""The editing methods of ``MusePipeline`` (inpaint, outpaint, mask-free edit, img2img), each a thin entry point into
``musekit.editing`` that also applies the call's Perfusion concepts."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from musekit.pipeline import ImageOutput


class EditingMethods:
    """Mixed into ``MusePipeline``."""

    def inpaint(self, image, mask, prompt, **kwargs) -> ImageOutput | tuple:
        """Repaint the masked region of ``image`` to match ``prompt``.

        The mask is a grayscale image (or tensor) of the image's size: **white pixels are repainted, black pixels
        are kept**. Any token the white area touches is re-generated, the base tokens first and then the
        super-resolution tokens conditioned on them (Muse 3.3.1); the result is composited into the original with a
        feathered mask, so pixels outside the mask are unchanged.

        A non-square image is inpainted in the square of its shorter side around the mask (scaled evenly to the
        model's square, so shapes keep their proportions; the rest of the image is kept as it is); only a mask
        longer than that square makes the whole image be squeezed into the model's square (with a warning).

        Args:
            image: PIL image or (3, H, W) tensor in [0, 1]; another size than the model's is resized.
            mask: PIL "L"/"1" image or tensor, same size as ``image``.
            prompt: what to paint there.
            feather_radius: width in pixels of the blend inside the mask edge (default 2).
            **kwargs: ``negative_prompt``, ``generator``, ``return_dict`` and the sampling options of ``__call__``.
        """
        from musekit.editing.inpaint import inpaint

        with self._maybe_concepts(prompt, kwargs):
            return inpaint(self, image, mask, prompt, **kwargs)

    def outpaint(self, image, prompt, pad: tuple[int, int, int, int], **kwargs) -> ImageOutput | tuple:
        """Extend ``image`` by ``pad`` = (left, top, right, bottom) pixels, keeping its aspect ratio.

        ``mode="window"`` (default) works at the scale where the image's longer side is the model's size, so the
        new area gets the detail the image has at the model's size (a 128 px model extending a 128 px image by 128
        px draws the new half at 128 px, not squeezed into half a window), in windows of the model's size placed
        outward from the image, each keeping a quarter window of what is already drawn (one window when the
        enlarged image at that scale fits the model's square); the prompt guides every window, so an object it
        names may appear in several.
        ``mode="fit"`` scales the enlarged canvas so that its longer side is the model's size and draws the new
        area in one pass: the model sees the whole scene, at a lower resolution when the canvas is larger than the
        model. The result has the enlarged size; the original pixels are unchanged.

        Args:
            image: PIL image or (3, H, W) tensor in [0, 1].
            prompt: what to draw in the new area.
            pad: pixels to add on the left, top, right and bottom.
            fill: None (default) starts the new area as the image's edge continued outward; a float in [0, 1] as
                that grey level.
            feather_radius: width in pixels of the blend at the seam (default 2).
            mode: "window" or "fit" (above).
            max_windows: with "window", refuse extensions that need more windows than this (default 64; each costs
                about one inpainting call).
            **kwargs: ``negative_prompt``, ``generator``, ``return_dict`` and the sampling options of ``__call__``.
                With ``output_type="ids"`` the tokens are those of the last window drawn.
        """
        from musekit.editing.outpaint import outpaint

        with self._maybe_concepts(prompt, kwargs):
            return outpaint(self, image, prompt, pad, **kwargs)

    def edit(self, image, prompt, **kwargs) -> ImageOutput | tuple:
        """Mask-free editing: tokenize, then re-mask and resample a random subset of tokens under ``prompt``.

        Defaults: ``iterations=100``, ``remask_fraction=0.08``, ``top_k=3`` as in Muse 3.3.2; ``guidance_scale`` is the
        model's own (Muse used 4; the bundled model edits better at its configured 2: 90% vs 73% in ``musekit eval
        edit``, see docs/BENCHMARKS.md).
        With ``source_prompt`` (the prompt that describes ``image``), the edit is confined to the tokens that the
        words differing between the two prompts attend to: editing with no mask and nothing else touched.
        ``return_intermediates=True`` adds the images after each quarter of the iterations (and after the last).
        A non-square image is edited at the model's own scale (``mode="window"``, the default): its shorter side
        becomes the model's size and model-size windows are edited from the middle outward, each seeing what the
        ones before changed; the region of ``source_prompt`` is found once on the whole image and each window edits
        its share of it. ``mode="squash"`` squeezes the image into the model's square and stretches the result back
        (the only way before 2026-11-26; docs/BENCHMARKS.md, "Mask-free editing of non-square images").
        ``feather_radius`` (default 2) blends the edited pixels into the kept ones.
        """
        from musekit.editing.maskfree import edit

        with self._maybe_concepts(prompt, kwargs):
            return edit(self, image, prompt, **kwargs)

    def img2img(self, image, prompt, strength: float = 0.5, **kwargs) -> ImageOutput | tuple:
        """Re-generate the image under ``prompt``, keeping its layout.

        ``strength`` 0 returns the input unchanged; 1 masks every token and regenerates fully, the base stage
        decoding as generation does (aMUSEd's img2img masks almost nothing at 1.0). In between, gamma(1 - strength)
        of the base tokens start masked and the base stage decodes in the model's full step count with every token
        open to revision: after each step the least confident tokens of the whole image, kept ones included, are
        masked again (as many as the schedule leaves from that start), so a kept token that the prompt or its new
        neighbours contradict is redrawn rather than left as a patch of the old image. The super-resolution stage
        then starts again from the new base image where it changed (and one base token around it), as generation
        does, and keeps the image's own tokens elsewhere. On the bundled model a prompt that contradicts the image
        is followed from a strength of about 0.1 up (docs/BENCHMARKS.md). With the aMUSEd scheduler, kept tokens
        stay fixed and the base stage runs round(strength x steps) steps, as in diffusers.

        A non-square image is redrawn at the model's own scale (``mode="window"``, the default): its shorter side
        becomes the model's size and model-size windows are redrawn from the middle outward, each seeing what the
        ones before it drew; ``mode="squash"`` squeezes it into the model's square in one pass and stretches the
        result back (narrowed objects, drawn round, come back wide: docs/BENCHMARKS.md).
        """
        from musekit.editing.img2img import img2img

        with self._maybe_concepts(prompt, kwargs):
            return img2img(self, image, prompt, strength, **kwargs)

    def _maybe_concepts(self, prompt, kwargs: dict):
        """Pop the concept options from an editing call's kwargs; a context that applies them (or does nothing)."""
        concepts = kwargs.pop("concepts", None)
        names = {"concept_bias": "bias", "concept_temperature": "temperature", "key_locking": "key_locking"}
        options = {names[k]: kwargs.pop(k) for k in names if k in kwargs}  # absent ones: using_concepts' defaults
        if not concepts:
            return contextlib.nullcontext()
        return self.using_concepts(prompt, concepts, kwargs.get("num_images_per_prompt", 1), **options)
