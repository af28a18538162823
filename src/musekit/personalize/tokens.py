"""Concept placeholder tokens: a new word whose input embedding is learned while the text encoder stays frozen."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from transformers import AddedToken

from musekit.text.base import TextEmbeddings, TextEncoder

TOKEN_PATTERN = re.compile(r"^<[a-z0-9][a-z0-9_-]*>$")


def check_token(token: str) -> str:
    if not TOKEN_PATTERN.match(token):
        raise ValueError(f"concept token must look like <name> (lowercase letters, digits, - or _), got {token!r}")
    return token


def register_token(encoder: TextEncoder, token: str) -> int:
    """Add ``token`` to the encoder's tokenizer (once) and return its id."""
    check_token(token)
    tokenizer = encoder.tokenizer
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(token, single_word=False, normalized=False, special=True)])
    return tokenizer.convert_tokens_to_ids(token)


MAX_SUPERCLASS_WORDS = 3


def superclass_ids(encoder: TextEncoder, superclass: str) -> list[int]:
    """Token ids of the superclass: a word (several pieces for words the tokenizer splits) or a short phrase whose
    pieces share one position, e.g. "red circle" for a model that reads an object's colour and shape from separate
    words (the concept's key is then locked to the mean of their keys)."""
    word = " ".join(superclass.split())
    if not word or len(word.split()) > MAX_SUPERCLASS_WORDS:
        raise ValueError(
            f"superclass must be a word or a phrase of at most {MAX_SUPERCLASS_WORDS} words (e.g. 'square' or "
            f"'red square'), got {superclass!r}"
        )
    ids = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the text encoder's tokenizer produced no token for the superclass {superclass!r}")
    return ids


def encode_with_concepts(
    encoder: TextEncoder, prompts: list[str], embeddings: dict[int, torch.Tensor]
) -> tuple[TextEmbeddings, torch.Tensor]:
    """Encode prompts whose concept tokens use the given (possibly trainable) embeddings; gradients flow to them.

    Returns:
        (TextEmbeddings padded to max_length like ``encode``, input_ids (B, max_length)).
    """
    input_ids, attention_mask = encoder.tokenize(prompts)
    full = input_ids.shape[1]
    masked = encoder.config.mask_padding  # the same policy as ``encode``: padding masked, or attended (CLIP/aMUSEd)
    longest = max(int(attention_mask.sum(1).max()), 1) if masked else full
    ids, mask = input_ids[:, :longest].to(encoder.device), attention_mask[:, :longest].to(encoder.device)
    table = encoder.input_embeddings()
    known = ids < table.num_embeddings
    safe_ids = ids.where(known, torch.zeros_like(ids))
    embeds = table(safe_ids)
    for token_id, vector in embeddings.items():
        embeds = torch.where((ids == token_id).unsqueeze(-1), vector.to(embeds.dtype), embeds)
    unknown = (~known) & ~torch.isin(ids, torch.tensor(list(embeddings) or [-1], device=ids.device))
    if unknown.any():
        raise ValueError("a prompt uses a concept token that is not loaded")
    hidden, pooled = encoder._encode_embeds(embeds, mask, safe_ids)
    if not masked:
        return TextEmbeddings(hidden.float(), pooled.float(), torch.ones_like(mask, dtype=torch.bool)), input_ids
    hidden = F.pad(hidden * mask.unsqueeze(-1).to(hidden.dtype), (0, 0, 0, full - longest))
    text = TextEmbeddings(hidden.float(), pooled.float(), F.pad(mask, (0, full - longest)).bool())
    return text, input_ids


def piece_positions(tokens: list[int], pieces: list[int]) -> list[int]:
    """Positions of every contiguous occurrence of ``pieces`` in ``tokens`` (a phrase's words elsewhere in the prompt,
    e.g. the colour of a "red circle" superclass in "on a red background", are not the superclass)."""
    n = len(pieces)
    return [i + k for i in range(len(tokens) - n + 1) if tokens[i : i + n] == pieces for k in range(n)]


def substitute(prompts: list[str], token: str, superclass: str) -> list[str]:
    return [p.replace(token, superclass) for p in prompts]


def collapse_superclass(
    super_text: TextEmbeddings, super_ids: torch.Tensor, concept_ids: torch.Tensor, token_id: int, pieces: list[int]
) -> TextEmbeddings:
    """Align a superclass-prompt encoding with the concept prompt: the superclass pieces become one position (mean).

    Used by global key-locking, whose key pathway reads the superclass prompt while the value pathway reads the
    concept prompt; both must have the same positions.
    """
    if len(pieces) == 1:
        return super_text
    hidden, mask = super_text.hidden_states.clone(), super_text.attention_mask.clone()
    out_h, out_m = torch.zeros_like(hidden), torch.zeros_like(mask)
    for b in range(hidden.shape[0]):
        target_positions = (concept_ids[b] == token_id).nonzero().flatten().tolist()
        src, dst, ids = 0, 0, super_ids[b].tolist()
        length = int(mask[b].sum())
        while src < length and dst < hidden.shape[1]:
            if dst in target_positions and ids[src : src + len(pieces)] == pieces:
                out_h[b, dst] = hidden[b, src : src + len(pieces)].mean(0)
                src += len(pieces)
            else:
                out_h[b, dst] = hidden[b, src]
                src += 1
            out_m[b, dst] = True
            dst += 1
    return TextEmbeddings(out_h, super_text.pooled, out_m)
