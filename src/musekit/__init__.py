"""musekit: Muse-style masked-token text-to-image generation and Perfusion-style personalization.

The names below are imported on first use, so that ``import musekit`` (and the command line's start, which can then
answer Ctrl-C at once) does not wait for torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "ImageOutput": "musekit.pipeline",
    "MusePipeline": "musekit.pipeline",
    "PipelineConfig": "musekit.config",
    "SchedulerConfig": "musekit.config",
    "SuperResConfig": "musekit.config",
    "TextEncoderConfig": "musekit.config",
    "TransformerConfig": "musekit.config",
    "VQConfig": "musekit.config",
}

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

if TYPE_CHECKING:
    from musekit.config import (
        PipelineConfig,
        SchedulerConfig,
        SuperResConfig,
        TextEncoderConfig,
        TransformerConfig,
        VQConfig,
    )
    from musekit.pipeline import ImageOutput, MusePipeline


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'musekit' has no attribute {name!r}")
