"""Perfusion: key-locked, gated rank-one edits of the cross-attention K and V projections."""

from musekit.personalize.rank_one import ConceptTarget, RankOneEdit

__all__ = ["ConceptTarget", "RankOneEdit"]
