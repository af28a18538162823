"""T5 encoder (Muse's text encoder family) from a local folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, T5EncoderModel

from musekit.config import TextEncoderConfig
from musekit.text.base import EncoderOnlyTextEncoder, masked_mean


class T5TextEncoder(EncoderOnlyTextEncoder):
    """``T5EncoderModel``; pooled = mean of the real tokens' final states."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__(config)
        if not config.path or not Path(config.path).is_dir():
            raise FileNotFoundError(f"T5 encoder folder not found: {config.path!r} (musekit never downloads)")
        self.path = Path(config.path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(str(self.path), local_files_only=True)
        self.freeze()

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(last_hidden, attention_mask)
