"""musekit: Muse-style masked-token text-to-image generation and Perfusion-style personalization."""

from musekit.config import (
    PipelineConfig,
    SchedulerConfig,
    SuperResConfig,
    TextEncoderConfig,
    TransformerConfig,
    VQConfig,
)
from musekit.pipeline import ImageOutput, MusePipeline

__version__ = "0.1.0"

__all__ = [
    "ImageOutput",
    "MusePipeline",
    "PipelineConfig",
    "SchedulerConfig",
    "SuperResConfig",
    "TextEncoderConfig",
    "TransformerConfig",
    "VQConfig",
    "__version__",
]
