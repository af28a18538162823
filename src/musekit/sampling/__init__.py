"""Parallel decoding: mask schedules, the MaskGIT scheduler, classifier-free guidance, the decoding loop."""

from musekit.sampling.guidance import apply_guidance, guidance_scale_at
from musekit.sampling.sampler import decode_tokens
from musekit.sampling.scheduler import MaskGITScheduler, SchedulerOutput
from musekit.sampling.schedules import mask_ratio, sample_mask_ratio

__all__ = [
    "MaskGITScheduler",
    "SchedulerOutput",
    "apply_guidance",
    "decode_tokens",
    "guidance_scale_at",
    "mask_ratio",
    "sample_mask_ratio",
]
