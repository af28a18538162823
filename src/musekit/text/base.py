"""The text-encoder interface shared by MiniLM, CLIP and T5."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from musekit.config import TextEncoderConfig

logger = logging.getLogger(__name__)


@dataclass
class TextEmbeddings:
    """Encoded prompts.

    Attributes:
        hidden_states: (B, T, D) float32 per-token states fed to cross-attention.
        pooled: (B, D_pooled) float32 one vector per prompt.
        attention_mask: (B, T) bool, True for real tokens (padding is False and never attended to).
    """

    hidden_states: torch.Tensor
    pooled: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.hidden_states.shape[0]

    def __getitem__(self, rows: slice) -> TextEmbeddings:
        """The prompts ``rows`` (a slice); ``text[batch:]`` is the conditional half of [unconditional ; conditional]."""
        return TextEmbeddings(self.hidden_states[rows], self.pooled[rows], self.attention_mask[rows])

    def to(self, device: torch.device | str) -> TextEmbeddings:
        return TextEmbeddings(self.hidden_states.to(device), self.pooled.to(device), self.attention_mask.to(device))

    def repeat_interleave(self, repeats: int) -> TextEmbeddings:
        return TextEmbeddings(
            self.hidden_states.repeat_interleave(repeats, 0),
            self.pooled.repeat_interleave(repeats, 0),
            self.attention_mask.repeat_interleave(repeats, 0),
        )

    def expand(self, batch_size: int) -> TextEmbeddings:
        """Broadcast a batch-1 embedding to ``batch_size``."""
        if len(self) != 1:
            raise ValueError("expand() needs a batch of one prompt")
        return self.repeat_interleave(batch_size)

    @staticmethod
    def cat(items: list[TextEmbeddings]) -> TextEmbeddings:
        return TextEmbeddings(
            torch.cat([i.hidden_states for i in items]),
            torch.cat([i.pooled for i in items]),
            torch.cat([i.attention_mask for i in items]),
        )

    def where(self, keep: torch.Tensor, other: TextEmbeddings) -> TextEmbeddings:
        """Per-sample select: ``self`` where ``keep`` (B,) is True, else ``other`` (same shapes)."""
        k3, k2 = keep.view(-1, 1, 1), keep.view(-1, 1)
        return TextEmbeddings(
            torch.where(k3, self.hidden_states, other.hidden_states),
            torch.where(k2, self.pooled, other.pooled),
            torch.where(k2, self.attention_mask, other.attention_mask),
        )


class TextEncoder(nn.Module):
    """Frozen text encoder: ``encode(prompts) -> TextEmbeddings``.

    Subclasses implement ``_encode_tokens``. Weights never train here; the encoded empty prompt is cached because
    classifier-free guidance and conditioning dropout use it constantly.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self._empty: TextEmbeddings | None = None

    # --- to implement -----------------------------------------------------------------------------------------
    tokenizer = None  # a transformers tokenizer

    @property
    def hidden_size(self) -> int:  # width of hidden_states
        raise NotImplementedError

    @property
    def pooled_size(self) -> int:  # width of pooled
        return self.hidden_size

    def _encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids and mask -> (hidden_states (B, T, D), pooled (B, D_pooled))."""
        raise NotImplementedError

    def _encode_embeds(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``_encode_tokens`` but from input embeddings (lets personalization learn a new word); ``input_ids``
        (learned tokens replaced by any valid id) for encoders that need them, e.g. to find CLIP's end token."""
        raise NotImplementedError(f"{type(self).__name__} does not support learned concept tokens yet")

    def input_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    # --- shared ----------------------------------------------------------------------------------------------
    def freeze(self) -> TextEncoder:
        self.requires_grad_(False)
        self.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (input_ids (B, T) int64, attention_mask (B, T) int64), padded to ``max_length``."""
        batch = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        untruncated = self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]  # musekit warns below
        for row, ids in enumerate(untruncated):
            if len(ids) > self.config.max_length:
                kept = self.tokenizer.decode(batch["input_ids"][row], skip_special_tokens=True)
                logger.warning("prompt truncated to the text encoder's %d tokens; it ends at ...%r",
                               self.config.max_length, kept[-40:])  # fmt: skip
        return batch["input_ids"], batch["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: str | list[str]) -> TextEmbeddings:
        """Encode prompts.

        Args:
            prompts: one prompt or a list of prompts (the empty string is the unconditional prompt).

        Returns:
            ``TextEmbeddings`` with hidden_states (B, T, D), pooled (B, D_pooled), attention_mask (B, T) bool.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a string or a list of strings")
        input_ids, attention_mask = self.tokenize(list(prompts))
        # A concept token that a call with concepts added to the tokenizer has no row in the embedding table (its
        # embedding is the concept's): outside such a call it is an unknown word, not an index error.
        rows = self.input_embeddings().num_embeddings
        if bool((input_ids >= rows).any()):
            unknown = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
            input_ids = input_ids.masked_fill(input_ids >= rows, unknown)
        full_length = input_ids.shape[1]
        if self.config.mask_padding:
            # Run the encoder only up to the longest prompt (padding is masked, so the outputs are the same),
            # then pad back to max_length so every batch has the same shape.
            longest = max(int(attention_mask.sum(1).max()), 1)
            input_ids, attention_mask = input_ids[:, :longest], attention_mask[:, :longest]
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden, pooled = self._encode_tokens(input_ids, attention_mask)
        if self.config.mask_padding:
            hidden = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)
            pad = full_length - hidden.shape[1]
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, pad))
            attention_mask = torch.nn.functional.pad(attention_mask, (0, pad))
        mask = attention_mask.bool() if self.config.mask_padding else torch.ones_like(attention_mask, dtype=torch.bool)
        return TextEmbeddings(hidden.float(), pooled.float(), mask)

    def empty(self, batch_size: int = 1) -> TextEmbeddings:
        """The encoded empty prompt, cached, broadcast to ``batch_size``."""
        if self._empty is None or self._empty.hidden_states.device != self.device:
            self._empty = self.encode([""])
        return self._empty.expand(batch_size)


class EncoderOnlyTextEncoder(TextEncoder):
    """Shared forward for bidirectional encoders (BERT/MiniLM, T5) that take ``input_ids`` or ``inputs_embeds``.

    Subclasses set ``self.model`` and implement ``pool``.
    """

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self._outputs(out, attention_mask)

    def _encode_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids=None):
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=True)
        return self._outputs(out, attention_mask)

    def _outputs(self, out, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.config.hidden_layer
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        return hidden, self.pool(out.last_hidden_state, attention_mask)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: (B, T, D), (B, T) -> (B, D)."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
