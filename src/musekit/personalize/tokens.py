"""Concept placeholder tokens: a new word whose input embedding is learned while the text encoder stays frozen.

A concept holds one placeholder per piece of its superclass ("red circle" -> two, "square" -> one, a word the
tokenizer splits into three -> three). In prompts the user writes the concept's token once ("<emblem>"); it is
expanded to its placeholders ("<emblem#0> <emblem#1>") before tokenizing, so the prompt with the superclass in the
concept's place ("red circle") has exactly the same positions, and each placeholder's key can be locked to the key
of its own piece there.
"""

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


MAX_SUPERCLASS_WORDS = 3


def piece_tokens(token: str, count: int) -> list[str]:
    """The placeholders of a concept with ``count`` pieces (the token itself for one; '#' never occurs in a user's
    token, so they cannot collide with another concept's)."""
    return [token] if count == 1 else [f"{token[:-1]}#{j}>" for j in range(count)]


def register_pieces(encoder: TextEncoder, token: str, count: int) -> list[int]:
    """Add a concept's placeholders to the encoder's tokenizer (once) and return their ids."""
    check_token(token)
    tokenizer = encoder.tokenizer
    pieces = piece_tokens(token, count)
    new = [p for p in pieces if p not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens([AddedToken(p, single_word=False, normalized=False, special=True) for p in new])
    return tokenizer.convert_tokens_to_ids(pieces)


def expand_tokens(prompts: list[str], token: str, count: int) -> list[str]:
    """Write a concept's placeholders where the prompts use its token."""
    if count == 1:
        return prompts
    return [p.replace(token, " ".join(piece_tokens(token, count))) for p in prompts]


def check_alignment(super_ids: torch.Tensor, positions: list[torch.Tensor], pieces: list[int], superclass: str) -> None:
    """The superclass prompt must hold piece j wherever the concept prompt holds placeholder j (key-locking reads it
    there); it does unless the tokenizer merges the superclass with the text around it."""
    for piece, where in zip(pieces, positions):
        if not bool((super_ids.to(where.device)[where] == piece).all()):
            raise ValueError(
                f"the superclass {superclass!r} does not line up with the concept's placeholders in this prompt "
                "(write the concept token as a separate word)"
            )


def superclass_phrase(superclass: str) -> str:
    """The superclass with its whitespace normalised ("red  circle " -> "red circle"); a clear error when it is empty
    or longer than ``MAX_SUPERCLASS_WORDS`` words."""
    words = superclass.split()
    if not words or len(words) > MAX_SUPERCLASS_WORDS:
        raise ValueError(
            f"superclass must be a word or a phrase of at most {MAX_SUPERCLASS_WORDS} words (e.g. 'square' or "
            f"'red square'), got {superclass!r}"
        )
    return " ".join(words)


def superclass_ids(encoder: TextEncoder, superclass: str) -> list[int]:
    """Token ids of the superclass: a word (several pieces for words the tokenizer splits) or a short phrase, e.g.
    "red circle" for a model that reads an object's colour and shape from separate words. The concept gets one
    placeholder per piece."""
    ids = encoder.tokenizer(superclass_phrase(superclass), add_special_tokens=False)["input_ids"]
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
    """The prompts with the superclass in the concept's place, and the article before it agreeing with it ("a <c>"
    -> "an orange circle", "an <c>" -> "a red circle"): the superclass prompt is what key-locking reads."""
    article = "an" if superclass[:1].lower() in "aeiou" else "a"
    pattern = re.compile(rf"\b([Aa]n?)(\s+){re.escape(token)}")

    def agree(match: re.Match) -> str:
        word = article if match.group(1)[0] == "a" else article.capitalize()
        return f"{word}{match.group(2)}{superclass}"

    return [pattern.sub(agree, p).replace(token, superclass) for p in prompts]
