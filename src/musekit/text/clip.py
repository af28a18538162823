"""CLIP text tower with projection, as aMUSEd uses it (penultimate hidden states + projected pooled embedding)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from musekit.config import TextEncoderConfig
from musekit.text.base import TextEncoder


class CLIPTextEncoder(TextEncoder):
    """``CLIPTextModelWithProjection`` from a local folder (``config.path``).

    ``hidden_layer=-2`` gives aMUSEd's penultimate-layer context; ``pooled`` is the projected ``text_embeds``.
    The folder may hold the tokenizer files too, or a ``tokenizer/`` sibling (diffusers layout).
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__(config)
        if not config.path or not Path(config.path).is_dir():
            raise FileNotFoundError(f"CLIP text encoder folder not found: {config.path!r} (musekit never downloads)")
        path = Path(config.path)
        self.path = path
        tokenizer_dir = path if (path / "vocab.json").exists() else path.parent / "tokenizer"
        if not (tokenizer_dir / "vocab.json").exists():
            raise FileNotFoundError(f"no CLIP tokenizer files (vocab.json) in {path} or {tokenizer_dir}")
        self.tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        self.model = CLIPTextModelWithProjection.from_pretrained(str(path), local_files_only=True)
        self.freeze()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def pooled_size(self) -> int:
        return self.model.config.projection_dim

    def _encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, output_hidden_states=True)
        return out.hidden_states[self.config.hidden_layer], out.text_embeds

    def _encode_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids=None):
        """CLIP's text model takes no ``inputs_embeds``: run it on ``input_ids`` (for its positions and end-token
        pooling) with the token-embedding lookup's output replaced by ``inputs_embeds``, so gradients reach them."""
        if input_ids is None:
            raise ValueError("CLIP needs the input ids beside the embeddings (to pool at the end token)")
        handle = self.input_embeddings().register_forward_hook(lambda module, args, out: inputs_embeds.to(out.dtype))
        try:
            return self._encode_tokens(input_ids, attention_mask)
        finally:
            handle.remove()
