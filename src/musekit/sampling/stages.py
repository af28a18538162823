"""The per-stage decoding of ``MusePipeline`` (mixed into it): one stage's text cache and decoding loop, and the
super-resolution stage's start from the base image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from musekit.sampling.options import SamplingOptions
from musekit.sampling.sampler import decode_tokens
from musekit.text import TextEmbeddings

if TYPE_CHECKING:
    from musekit.models.transformer import MaskedTransformer


class StageMethods:
    """Mixed into ``MusePipeline``."""

    def super_resolve(
        self,
        base_ids: torch.Tensor,
        text: TextEmbeddings,
        batch: int,
        options: SamplingOptions,
        generator: torch.Generator | None,
        keep_ids: torch.Tensor | None = None,
        region: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The super-resolution stage for ``base_ids``: it starts from ``sr_start_ids`` (the upsampled base image
        re-tokenized with a share ``options.sr_strength`` re-masked; all [MASK] at strength 1, as in Muse). For
        editing, ``keep_ids`` (B, H, W) are the tokens to keep outside the bool ``region`` (B, H, W)."""
        start = self.sr_start_ids(base_ids, options.sr_strength, generator)
        mask_id = self.superres.config.mask_token_id
        if region is not None:
            fresh = torch.full_like(keep_ids, mask_id) if start is None else start
            start = torch.where(region, fresh, keep_ids)
        if start is not None and not bool((start == mask_id).any()):
            return start  # nothing to decode (sr_strength 0): the re-tokenized upsampled base image as it is
        return self.generate_tokens(self.superres, text, batch, options, generator, base_ids, start)

    def sr_start_ids(
        self, base_ids: torch.Tensor, strength: float, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """Start tokens of the super-resolution stage: None (all [MASK], Muse) at strength 1; otherwise the base
        image decoded, upsampled to the final size and re-tokenized, with a random share ``strength`` re-masked."""
        from musekit.editing.img2img import upsampled_start_ids

        return upsampled_start_ids(self, base_ids, strength, generator)

    @staticmethod
    def _precompute_kwargs(model, text: TextEmbeddings, options: SamplingOptions) -> dict:
        if hasattr(model, "default_micro_conds"):  # aMUSEd: the micro-conditioning options
            micro = model.default_micro_conds(
                text.hidden_states.shape[0],
                text.hidden_states.device,
                options.micro_conditioning_aesthetic_score,
                options.micro_conditioning_crop_coord,
            )
            return {"micro_conds": micro}
        return {}

    def generate_tokens(
        self,
        model: MaskedTransformer,
        text: TextEmbeddings,
        batch: int,
        options: SamplingOptions,
        generator: torch.Generator | None,
        cond_ids: torch.Tensor | None = None,
        start_ids: torch.Tensor | None = None,
        num_steps: int | None = None,
        revise: bool = False,
    ) -> torch.Tensor:
        """Decode one stage (base, or super-resolution when ``cond_ids`` is given).

        Args:
            text: [unconditional ; conditional] (2B) from ``encode_prompt``; guidance 1 uses the conditional half.
            start_ids: (B, h, w) with [MASK] where tokens are unknown; all-[MASK] when None.
            num_steps: decoding steps (default: the stage's steps in ``options``).
            revise: the known tokens of ``start_ids`` may be redrawn too (image-to-image; see
                ``musekit.sampling.scheduler``).
        """
        is_sr = cond_ids is not None
        steps = num_steps or (options.sr_inference_steps if is_sr else options.num_inference_steps)
        scale = options.sr_guidance_scale if is_sr else options.guidance_scale
        grid = model.config.grid_size
        device = self.device
        if start_ids is None:
            start_ids = torch.full((batch, grid, grid), model.config.mask_token_id, dtype=torch.long, device=device)
        guided = scale != 1.0
        if not guided:
            text = text[batch:]
        text = text.to(device)
        if cond_ids is not None:
            cond_ids = self.sr_cond_ids(cond_ids)
            if guided:
                cond_ids = torch.cat([cond_ids, cond_ids])
        extra = self._precompute_kwargs(model, text, options)
        if self._concept_call is not None:  # the edits are applied to the cached keys/values, once per call
            cache = self._concept_call.cache(self, model, text, cond_ids, **extra)
        else:
            cache = model.precompute(text, cond_ids, **extra)  # text keys/values once per call
        return decode_tokens(
            model,
            cache,
            start_ids.to(device),
            steps,
            self.scheduler_config,
            guidance_scale=scale,
            guidance_schedule=options.guidance_schedule,
            temperature=options.temperature,
            top_k=options.top_k,
            generator=generator,
            progress=self.progress_bar,
            description="sr" if is_sr else "base",
            revise=revise,
        )
