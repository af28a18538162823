"""VQGAN-style image tokenizer: images (B, 3, H, W) in [0, 1] <-> token ids (B, h, w)."""

from musekit.tokenizer.code_subset import code_usage, select_codes
from musekit.tokenizer.quantizer import QuantizerOutput, VectorQuantizer
from musekit.tokenizer.vqgan import VQModel, VQOutput

__all__ = ["QuantizerOutput", "VQModel", "VQOutput", "VectorQuantizer", "code_usage", "select_codes"]
