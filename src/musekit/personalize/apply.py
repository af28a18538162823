"""Use concepts at inference: encode prompts with concept tokens, install the edits, compute the K/V cache once.

The edits are installed only while each stage's cross-attention keys and values are computed (once per call), so
a decoding step costs the same with or without concepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from musekit.models.layers import ContextCache
from musekit.models.transformer import MaskedTransformer
from musekit.personalize.concept import Concept
from musekit.personalize.rank_one import ConceptTarget, RankOneEdit
from musekit.personalize.tokens import (
    check_alignment,
    encode_with_concepts,
    expand_tokens,
    register_pieces,
    substitute,
    superclass_ids,
)
from musekit.text.base import TextEmbeddings

KEY_LOCKING = ("local", "global")


@contextmanager
def installed_edits(
    model: MaskedTransformer, c_inv: torch.Tensor, keys: list[list[ConceptTarget]], values: list[list[ConceptTarget]],
    exact: bool = True,
) -> Iterator[None]:  # fmt: skip
    """Wrap every cross-attention's ``to_k``/``to_v`` with ``RankOneEdit``; restore the originals on exit."""
    saved = []
    try:
        for attn, key_targets, value_targets in zip(model.text_attentions, keys, values):
            saved.append((attn, attn.to_k, attn.to_v))
            attn.to_k = RankOneEdit(attn.to_k, c_inv, key_targets, exact)
            attn.to_v = RankOneEdit(attn.to_v, c_inv, value_targets, exact)
        yield
    finally:
        for attn, to_k, to_v in saved:
            attn.to_k, attn.to_v = to_k, to_v


@dataclass
class ConceptPrompts:
    """The encodings one call needs: the concept prompts, and the superclass prompts (for key-locking)."""

    text: TextEmbeddings  # (B, T, D) prompts with the concepts' placeholders
    super_text: TextEmbeddings  # (B, T, D) the same prompts with each concept's superclass in its place
    positions: dict[str, torch.Tensor]  # token -> (pieces, B, T) bool, where each of its placeholders is


def encode_concept_prompts(encoder, prompts: list[str], concepts: list, isolate: bool = True) -> ConceptPrompts:
    """Encode ``prompts`` that use ``concepts`` (``Concept`` objects, or (token, superclass, embedding (pieces, D))
    triples while one is learned; gradients flow to the embeddings).

    With several concepts and ``isolate`` (the default), each concept's placeholders are encoded in the prompt with
    the other concepts' superclasses in their places, and the other tokens as in the superclass prompt: a
    bidirectional text encoder (MiniLM, T5) otherwise mixes the concepts' learned embeddings into each other's
    encodings, which moves each concept's encoding away from its i* (its gate closes) and towards the other's.
    """
    triples = [(c.token, c.superclass, c.embedding) if isinstance(c, Concept) else tuple(c) for c in concepts]
    embeddings, ids_of, pieces_of = {}, {}, {}
    expanded, super_prompts = prompts, prompts
    for token, superclass, embedding in triples:
        pieces_of[token] = superclass_ids(encoder, superclass)
        if embedding.shape[0] != len(pieces_of[token]):
            raise ValueError(
                f"concept {token} has {embedding.shape[0]} placeholder(s) but its superclass {superclass!r} has "
                f"{len(pieces_of[token])} piece(s) (a file from an older musekit?); learn it again"
            )
        ids_of[token] = register_pieces(encoder, token, embedding.shape[0])
        embeddings.update(zip(ids_of[token], embedding))
        expanded = expand_tokens(expanded, token, embedding.shape[0])
        super_prompts = substitute(super_prompts, token, superclass)
    text, ids = encode_with_concepts(encoder, expanded, embeddings)
    super_text = encoder.encode(super_prompts)
    super_ids, _ = encoder.tokenize(super_prompts)
    positions = {}
    for token, superclass, _ in triples:
        where = [ids == i for i in ids_of[token]]
        check_alignment(super_ids, where, pieces_of[token], superclass)
        positions[token] = torch.stack(where)
    if isolate and len(triples) > 1:
        text = isolated_encodings(encoder, prompts, triples, text, super_text, positions)
    return ConceptPrompts(text, super_text, positions)


def isolated_encodings(
    encoder, prompts: list[str], triples: list, text: TextEmbeddings, super_text: TextEmbeddings, positions: dict
) -> TextEmbeddings:
    """The states of ``text`` (several concepts) rebuilt: each concept's placeholders from the prompt where only it
    is a placeholder (the others replaced by their superclasses), every other token from the superclass prompt. The
    pooled vector (read only by models that condition on it, e.g. aMUSEd's) stays the whole prompt's, so it carries
    every concept as a one-concept prompt's carries its one. Baseline concepts (embeddings only) are isolated too."""
    hidden = super_text.hidden_states.to(text.hidden_states.device)
    for token, _, embedding in triples:
        solo = prompts
        for other, other_superclass, _ in triples:
            if other != token:
                solo = substitute(solo, other, other_superclass)
        ids = register_pieces(encoder, token, embedding.shape[0])
        solo_text, solo_ids = encode_with_concepts(encoder, expand_tokens(solo, token, len(ids)),
                                                   dict(zip(ids, embedding)))  # fmt: skip
        where = torch.isin(solo_ids, torch.tensor(ids, device=solo_ids.device)).to(hidden.device)
        if not torch.equal(where, positions[token].any(0).to(hidden.device)):
            raise ValueError(f"the placeholders of {token} do not line up between the prompt and its isolated form")
        hidden = torch.where(where.unsqueeze(-1), solo_text.hidden_states.to(hidden.device), hidden)
    return TextEmbeddings(hidden, text.pooled, text.attention_mask)


def local_key_targets(
    model: MaskedTransformer, super_text: TextEmbeddings, positions: torch.Tensor, batch_rows: int
) -> list[torch.Tensor]:
    """Per layer, (rows, d) o*_K = W_K e_super, e_super = the superclass piece's encoding in the same prompt.

    ``positions`` (B, T) marks one placeholder of the concept in the B conditional rows; rows without it (and the
    ``batch_rows - B`` unconditional rows, which come first) get zeros: their gate is ~0 anyway.
    """
    context, _ = model.project_text(super_text)  # (B, T, d)
    weights = positions.to(context.device).float().unsqueeze(-1)
    e_super = (context * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, d)
    e_super = torch.cat([e_super.new_zeros(batch_rows - e_super.shape[0], e_super.shape[1]), e_super])
    return [e_super @ attn.to_k.weight.t() for attn in model.text_attentions]


def concept_cache(
    model: MaskedTransformer,
    stage: str,
    text: TextEmbeddings,
    prompts: ConceptPrompts,
    concepts: list[Concept],
    c_inv: torch.Tensor,
    beta: float,
    tau: float,
    key_locking: str,
    cond_ids: torch.Tensor | None = None,
    exact: bool = True,
    precompute_kwargs: dict | None = None,
) -> ContextCache:
    """The stage's K/V cache for ``text`` = [unconditional (B) ; concept prompts (B)] with the concept edits."""
    if key_locking not in KEY_LOCKING:
        raise ValueError(f"key_locking must be one of {KEY_LOCKING}, got {key_locking!r}")
    rows = len(text)
    layers = len(model.text_attentions)
    keys: list[list[ConceptTarget]] = [[] for _ in range(layers)]
    values: list[list[ConceptTarget]] = [[] for _ in range(layers)]
    for concept in concepts:
        if concept.method != "perfusion":
            continue  # baselines: the embedding (and swapped weights) only, no rank-one edit
        if stage not in concept.target_inputs:
            raise ValueError(f"concept {concept.token} has no edit for the {stage} stage")
        for piece in range(concept.pieces):  # each placeholder is locked to its own superclass piece
            i_star = concept.target_inputs[stage][piece]
            if concept.variant == "trained-k":
                key_out = [concept.key_outputs[stage][layer, piece] for layer in range(layers)]
            else:
                key_out = local_key_targets(model, prompts.super_text, prompts.positions[concept.token][piece], rows)
            for layer in range(layers):
                keys[layer].append(ConceptTarget(i_star, key_out[layer], beta, tau))
                values[layer].append(ConceptTarget(i_star, concept.value_outputs[stage][layer, piece], beta, tau))
    key_text = None
    if key_locking == "global":
        uncond = TextEmbeddings(*(t[: rows - len(prompts.super_text)] for t in
                                  (text.hidden_states, text.pooled, text.attention_mask)))  # fmt: skip
        key_text = TextEmbeddings.cat([uncond, prompts.super_text])
    extra = precompute_kwargs or {}
    if not any(keys):
        return model.precompute(text, cond_ids, **extra)
    with installed_edits(model, c_inv, keys, values, exact):
        return model.precompute(text, cond_ids, key_text=key_text, **extra)
