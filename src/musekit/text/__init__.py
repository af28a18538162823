"""Frozen pretrained text encoders behind one interface (``TextEncoder.encode``)."""

from musekit.text.base import TextEmbeddings, TextEncoder
from musekit.text.factory import build_text_encoder, load_text_encoder, save_text_encoder

__all__ = ["TextEmbeddings", "TextEncoder", "build_text_encoder", "load_text_encoder", "save_text_encoder"]
