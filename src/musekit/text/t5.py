"""T5 encoder (Muse's text encoder family) from a local folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, T5EncoderModel

from musekit.config import TextEncoderConfig
from musekit.text.base import TextEncoder, masked_mean


class T5TextEncoder(TextEncoder):
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

    def _encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._outputs(self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True),
                             attention_mask)  # fmt: skip

    def _encode_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=True)
        return self._outputs(out, attention_mask)

    def _outputs(self, out, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.config.hidden_layer
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        return hidden, masked_mean(out.last_hidden_state, attention_mask)
