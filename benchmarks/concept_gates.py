"""Where Perfusion's gates fire: learn the evaluation concepts, print the gate coefficients of a two-concept prompt.

Usage: python benchmarks/concept_gates.py MODEL_DIR [--captions] [--steps 60] [--threads 1] [--ridge R]

Learns bullseye, diamond and crescent (as `musekit eval personalize` does: 5 images, local variant, generic templates
or, with --captions, per-image captions), then prints, for the base stage:
- the cosine of the concepts' i*s in the C^-1 metric (how separable their gates can be),
- s_n(e) = i*_n^T C^-1 e / i*_n^T C^-1 i*_n of every concept at every token of a two-concept prompt (a gate at beta 0.7,
  tau 0.15 is above 0.5 where s > 0.7),
- the eigenvalue range of C,
- the two-concept rate of `musekit eval personalize` for these concepts at the default beta (0.7 before
  2026-11-25, now 0.8).
"""

from __future__ import annotations

import argparse

import torch

from musekit.data.concepts import CONCEPTS, concept_examples
from musekit.eval.checker import load_checker
from musekit.eval.personalize_eval import PersonalizeEvalSettings, concept_references, two_concept_rate
from musekit.personalize.apply import encode_concept_prompts
from musekit.personalize.tokens import expand_tokens
from musekit.pipeline import MusePipeline

NAMES = ("bullseye", "diamond", "crescent")
PROMPT = "a <bullseye> left of a <crescent> on a gray background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--captions", action="store_true")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ridge", type=float, default=None, help="C's ridge relative to its mean eigenvalue")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    pipe.progress_bar = False
    if args.ridge is not None:
        pipe.perfusion_c_inv()
        pipe.set_covariances(pipe._covariances, args.ridge)
    checker = load_checker()
    learned, refs = {}, {}
    for name in NAMES:
        examples = concept_examples(name, 5, pipe.image_size, 0)
        images = [image for image, _, _ in examples]
        refs[name] = concept_references(checker, examples)
        captions = [text for _, _, text in examples] if args.captions else None
        learned[(name, "perfusion")] = pipe.learn_concept(images, f"<{name}>", CONCEPTS[name]["superclass"],
                                                          args.steps, progress=False, captions=captions)  # fmt: skip
    concepts = [learned[(n, "perfusion")] for n in NAMES]
    c_inv = pipe.perfusion_c_inv()["transformer"].double()
    covariance = pipe._covariances["transformer"].double()
    eig = torch.linalg.eigvalsh(covariance)
    print(f"C eigenvalues: min {eig.min():.2e}, mean {eig.mean():.3f}, max {eig.max():.2f} (d={len(eig)})")
    targets = torch.cat([c.target_inputs["transformer"].double() for c in concepts])  # every placeholder
    labels = [f"{n}#{p}" for n, c in zip(NAMES, concepts) for p in range(c.pieces)]
    metric = targets @ c_inv
    gram = metric @ targets.t()
    cosine = gram / (gram.diagonal().sqrt()[:, None] * gram.diagonal().sqrt()[None])
    print("i* cosine in the C^-1 metric:", labels)
    for name, row in zip(labels, cosine.tolist()):
        print(f"  {name:9s}", " ".join(f"{x:5.2f}" for x in row))
    with torch.no_grad():
        encoded = encode_concept_prompts(pipe.text_encoder, [PROMPT], concepts)
        context, _ = pipe.transformer.project_text(encoded.text)
    s = (context[0].double() @ metric.t()) / gram.diagonal()
    expanded = [PROMPT]
    for c in concepts:
        expanded = expand_tokens(expanded, c.token, c.pieces)
    ids = pipe.text_encoder.tokenize(expanded)[0][0].tolist()
    tokens = pipe.text_encoder.tokenizer.convert_ids_to_tokens(ids)
    print(f"s_n(e) at each token of {PROMPT!r}:", labels)
    for t, token in enumerate(tokens):
        if ids[t] == pipe.text_encoder.tokenizer.pad_token_id:
            break
        print(f"  {token:12s}", " ".join(f"{x:5.2f}" for x in s[t].tolist()))
    settings = PersonalizeEvalSettings(concepts=NAMES)
    rates = two_concept_rate(pipe, checker, learned, refs, settings)
    print(f"two concepts in one prompt (beta {settings.default_beta}):", {k: round(v, 3) for k, v in rates.items()})


if __name__ == "__main__":
    main()
