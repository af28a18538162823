"""Is a concept's key locked? Where the base stage's cross-attention looks with and without the concept edit.

Usage: python benchmarks/concept_keys.py MODEL_DIR CONCEPT_FILE [--position "top left"] [--background blue]
    [--threads 2]

For the prompt "a <token> at the POSITION on a BACKGROUND background" it prints, for the concept token in the first
cross-attention layer:
- s(e) = i*^T C^-1 e / i*^T C^-1 i* with the concept's stored i*,
- the norm of the residual key W_K (e - s(e) i*) next to the superclass key W_K e_super (key-locking holds when the
  residual is small: the token's key is then the gate-scaled superclass key),
and the share of attention (all layers and heads) that image tokens away from the object cell and in it give to each
word, on the base tokens the model draws for the superclass prompt, without and with the concept edit.
"""

from __future__ import annotations

import argparse

import torch

from musekit.data.concepts import cell_box
from musekit.models.attention_maps import cross_attention_maps
from musekit.personalize.apply import concept_cache, encode_concept_prompts
from musekit.personalize.concept import Concept
from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE
from musekit.pipeline import MusePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("concept")
    parser.add_argument("--position", default="top left")
    parser.add_argument("--background", default="blue")
    parser.add_argument("--beta", type=float, default=DEFAULT_BIAS, help="gate bias (0.7 before 2026-11-25)")
    parser.add_argument("--tau", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    concept = Concept.load(args.concept)
    prompt = f"a {concept.token} at the {args.position} on a {args.background} background"
    super_prompt = prompt.replace(concept.token, concept.superclass)
    model = pipe.transformer
    ids = pipe(super_prompt, generator=torch.Generator().manual_seed(0), output_type="ids").base_ids
    encoded = encode_concept_prompts(pipe.text_encoder, [prompt], [concept])
    c_inv = pipe.perfusion_c_inv()["transformer"]
    with torch.no_grad():
        w_k = model.text_attentions[0].to_k.weight.double()
        for piece in range(concept.pieces):  # each placeholder and the superclass piece its key is locked to
            where = encoded.positions[concept.token][piece, 0].nonzero()[0, 0]
            e = model.project_text(encoded.text)[0][0, where].double()
            e_super = model.project_text(encoded.super_text)[0][0, where].double()
            i_star = concept.target_inputs["transformer"][piece].double()
            s = (i_star @ c_inv @ e) / (i_star @ c_inv @ i_star)
            print(f"{prompt!r}, placeholder {piece}: s(e) = {s:.2f}; |W_K (e - s i*)| = "
                  f"{(w_k @ (e - s * i_star)).norm():.2f}, |W_K e_super| = {(w_k @ e_super).norm():.2f}")  # fmt: skip
        plain = cross_attention_maps(model, ids, model.precompute(pipe.text_encoder.encode([super_prompt])))
        cache = concept_cache(model, "transformer", encoded.text, encoded, [concept], c_inv, args.beta, args.tau,
                              "local")  # fmt: skip
        edited = cross_attention_maps(model, ids, cache)
    grid = model.config.grid_size
    x0, y0, x1, y1 = cell_box(args.position, grid)
    inside = torch.zeros(grid, grid, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    inside = inside.flatten()
    token_ids, mask = pipe.text_encoder.tokenize([super_prompt])
    words = pipe.text_encoder.tokenizer.convert_ids_to_tokens(token_ids[0].tolist())
    real = mask[0].bool().tolist()
    for label, maps in (("superclass prompt", plain), ("concept edit", edited)):
        for region, rows in (("away from the object", ~inside), ("object cell", inside)):
            shares = maps[0, rows].mean(0).tolist()
            print(f"  {label:17s} {region:20s}", " ".join(f"{w}:{v:.2f}" for w, v, r in zip(words, shares, real) if r))


if __name__ == "__main__":
    main()
