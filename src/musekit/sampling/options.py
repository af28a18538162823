"""The sampling options shared by text-to-image and every editing method, resolved against pipeline defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

from musekit.config import PipelineConfig
from musekit.sampling.guidance import GUIDANCE_SCHEDULES

OUTPUT_TYPES = ("pil", "np", "pt", "ids")


@dataclass(frozen=True)
class SamplingOptions:
    num_inference_steps: int
    sr_inference_steps: int
    guidance_scale: float
    sr_guidance_scale: float
    guidance_schedule: str
    temperature: float | tuple[float, float] | None
    top_k: int | None
    num_images_per_prompt: int
    output_type: str
    # aMUSEd micro-conditioning (ignored by models without it); None: the model's defaults, as diffusers'
    micro_conditioning_aesthetic_score: float | None = None
    micro_conditioning_crop_coord: tuple[int, int] | None = None
    sr_strength: float = 1.0

    @classmethod
    def resolve(
        cls,
        config: PipelineConfig,
        num_inference_steps: int | None = None,
        sr_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sr_guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        temperature: float | tuple[float, float] | None = None,
        top_k: int | None = None,
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        micro_conditioning_aesthetic_score: float | None = None,
        micro_conditioning_crop_coord: tuple[int, int] | None = None,
        sr_strength: float | None = None,
    ) -> SamplingOptions:
        """Fill unset options from ``config`` and validate everything (ValueError with what to do)."""
        options = cls(
            num_inference_steps if num_inference_steps is not None else config.num_inference_steps,
            sr_inference_steps if sr_inference_steps is not None else config.sr_inference_steps,
            guidance_scale if guidance_scale is not None else config.guidance_scale,
            sr_guidance_scale if sr_guidance_scale is not None else config.sr_guidance_scale,
            guidance_schedule or config.guidance_schedule,
            temperature,
            top_k,
            num_images_per_prompt,
            output_type,
            micro_conditioning_aesthetic_score,
            None if micro_conditioning_crop_coord is None else tuple(micro_conditioning_crop_coord),
            sr_strength if sr_strength is not None else config.sr_strength,
        )
        options.validate()
        return options

    def validate(self) -> None:
        if self.num_inference_steps < 1 or self.sr_inference_steps < 1:
            raise ValueError(
                f"inference steps must be >= 1 (got {self.num_inference_steps}, {self.sr_inference_steps})"
            )
        for name in ("guidance_scale", "sr_guidance_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        temperature = self.temperature
        values = [] if temperature is None else temperature if isinstance(temperature, tuple | list) else [temperature]
        if not all(math.isfinite(value) and value >= 0 for value in values):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {self.guidance_schedule!r}")
        if self.num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {self.num_images_per_prompt}")
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {self.output_type!r}")
        if not 0.0 <= self.sr_strength <= 1.0:  # (NaN fails too)
            raise ValueError(f"sr_strength must be in [0, 1], got {self.sr_strength}")
        crop = self.micro_conditioning_crop_coord
        if crop is not None and (len(crop) != 2 or min(crop) < 0):
            raise ValueError(f"micro_conditioning_crop_coord must be two non-negative numbers, got {crop}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
