"""Masked-token transformers: networks only (ids + context -> logits); sampling and training live elsewhere."""

from musekit.models.layers import Attention, ContextCache
from musekit.models.superres import SuperResTransformer
from musekit.models.transformer import MaskedTransformer

__all__ = ["Attention", "ContextCache", "MaskedTransformer", "SuperResTransformer"]
