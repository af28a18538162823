"""Why two concepts in one prompt fail: gate cross-talk, and the two-concept rate under inference settings.

Usage: python benchmarks/two_concept_probe.py [--concepts bullseye,diamond,crescent] [--cache runs/two-concept]
[--betas 0.7,0.8,0.9] [--taus 0.15] [--key-locking local,global] [--context joint,isolated]
[--sampling '{}' '{"guidance_scale": 3}'] [--negative none|superclass] [--single] [--samples 2] [--no-bound]
[--threads 2] [--device cpu|cuda]

Learns each concept once as `musekit eval personalize` does (local variant, per-image captions, 60 steps; cached as
concept files in ``--cache`` so reruns skip it), then for every ordered pair prints

* the gate matrix of the base stage: for "a <a> left of a <b> on a ... background", each placeholder's coefficient
  s and gate sigmoid((s - beta) / tau) for every concept target (one per superclass piece);
* the eval's two-concept rate (each object cell closer to its own concept's references than to the other's), for
  every (beta, tau, key-locking), and the same score for the plain superclass prompt ("a red circle left of an orange
  circle ...": what the checker's similarity rule grants without any concept);
* with ``--single``, each concept alone scored by the eval's own ``score`` (similarity, text fidelity).

``--context joint`` encodes every concept in the one prompt (the bidirectional text encoder then mixes their learned
embeddings into each other's encodings); ``isolated`` (musekit's default since 2026-11-25) encodes each concept in the
prompt with the other concepts' superclasses in their places, and the other tokens as in the superclass prompt.
``--sampling`` takes pipeline arguments as JSON (guidance, ``top_k``, ...); ``--negative superclass`` makes each pair
prompt's negative prompt its plain superclass pair (guidance away from the superclass instead of from the empty
prompt). ``--device cuda`` learns and samples on a GPU (the checker stays on the CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from concept_probe_setup import cached, examples_and_references, load_pipeline_and_checker

import musekit.personalize.call as concept_call
from musekit.data.concepts import CONCEPTS, backgrounds_for
from musekit.data.shapes import with_articles
from musekit.eval.personalize_eval import generate, pair_success, score
from musekit.personalize.apply import encode_concept_prompts
from musekit.personalize.concept import Concept
from musekit.personalize.trainer import PersonalizeConfig


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def pair_prompts(a: str, b: str, token_a: str, token_b: str) -> list[str]:
    backgrounds = [bg for bg in backgrounds_for(a) if bg in backgrounds_for(b)][:4]
    return [with_articles(f"a {token_a} left of a {token_b} on a {bg} background") for bg in backgrounds]


def pair_score(checker, images: torch.Tensor, refs_a: torch.Tensor, refs_b: torch.Tensor) -> list[bool]:
    return pair_success(checker, images, refs_a, refs_b).tolist()


def gate_matrix(pipe, a: Concept, b: Concept, prompt: str, beta: float, tau: float, encode) -> list[str]:
    """Rows: each placeholder of a and b; columns: each concept target; entries 's/gate'."""
    encoded = encode(pipe.text_encoder, [prompt], [a, b])
    model = pipe.transformer
    c_inv = pipe.perfusion_c_inv()["transformer"].double()
    context, _ = model.project_text(encoded.text)  # (1, T, d)
    targets = [(c.token, k, c.target_inputs["transformer"][k].double()) for c in (a, b) for k in range(c.pieces)]
    lines = ["            " + " ".join(f"{t}#{k}".rjust(16) for t, k, _ in targets)]
    for concept in (a, b):
        for piece in range(concept.pieces):
            where = encoded.positions[concept.token][piece][0]
            e = context[0][where][0].double()
            cells = []
            for _, _, i_star in targets:
                s = (i_star @ c_inv @ e) / (i_star @ c_inv @ i_star)
                gate = torch.sigmoid((s - beta) / tau)
                cells.append(f"{s.item():6.2f}/{gate.item():.2f}".rjust(16))
            lines.append(f"{concept.token}#{piece}".ljust(12) + " ".join(cells))
    return lines


def joint(encoder, prompts, concepts):
    """Every concept encoded in the one prompt (musekit before isolation was made the default)."""
    return encode_concept_prompts(encoder, prompts, concepts, isolate=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concepts", default="bullseye,diamond,crescent")
    parser.add_argument("--cache", default="runs/two-concept")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--betas", default="0.7,0.8,0.9")
    parser.add_argument("--taus", default="0.15")
    parser.add_argument("--key-locking", default="local")
    parser.add_argument(
        "--context",
        default="joint,isolated",
        help="joint (every concept in the one prompt), isolated (musekit's default)",
    )
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--sampling", nargs="*", default=["{}"], help="JSON dicts of extra pipeline arguments")
    parser.add_argument("--single", action="store_true", help="also score each concept alone (the eval's score)")
    parser.add_argument("--no-bound", action="store_true", help="skip the superclass-prompt score")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--negative",
        choices=["none", "superclass"],
        default="none",
        help="superclass: each pair prompt's negative prompt is its plain superclass pair",
    )
    parser.add_argument("--device", default="cpu", help="where the pipeline runs (the checker runs on the CPU)")
    args = parser.parse_args()
    if args.negative != "none" and any("negative_prompt" in json.loads(x) for x in args.sampling):
        parser.error("--negative sets the negative prompt: leave negative_prompt out of --sampling")
    pipe, checker = load_pipeline_and_checker(args.threads, args.device)
    names = args.concepts.split(",")
    examples, refs = examples_and_references(pipe, checker, names)
    config = PersonalizeConfig(steps=args.steps)
    concepts = {n: cached(pipe, n, examples[n], Path(args.cache) / f"{n}.safetensors", config)[0] for n in names}
    pairs = [(a, b) for a in names for b in names if a != b]
    encoders = {"joint": joint, "isolated": encode_concept_prompts}
    for context in args.context.split(","):
        for a, b in pairs:
            prompt = pair_prompts(a, b, f"<{a}>", f"<{b}>")[0]
            print(f"{prompt} ({context}, beta 0.7, tau 0.15; s/gate)")
            for line in gate_matrix(pipe, concepts[a], concepts[b], prompt, 0.7, 0.15, encoders[context]):
                print("  " + line)
    if not args.no_bound:
        total = []
        for a, b in pairs:
            prompts = pair_prompts(a, b, CONCEPTS[a]["superclass"], CONCEPTS[b]["superclass"])
            ok = pair_score(checker, generate(pipe, prompts, 0, args.samples), refs[a], refs[b])
            total += ok
            print(f"superclass prompt {a}+{b}: {sum(ok) / len(ok):.3f}", flush=True)
        print(f"superclass prompt mean: {sum(total) / len(total):.3f}", flush=True)
    settings = [
        (context, locking, tau, beta, sampling)
        for context in args.context.split(",")
        for locking in args.key_locking.split(",")
        for tau in floats(args.taus)
        for beta in floats(args.betas)
        for sampling in args.sampling
    ]
    for context, locking, tau, beta, sampling in settings:
        concept_call.encode_concept_prompts = encoders[context]
        extra = dict(json.loads(sampling), concept_bias=beta, concept_temperature=tau, key_locking=locking)
        label = f"{context} {locking} beta {beta} tau {tau} {sampling}"
        if args.single:
            rows = [score(pipe, checker, f"<{n}>", n, refs[n], 0, 2, concepts=[concepts[n]], **extra) for n in names]
            sim = sum(r["concept_similarity"] for r in rows) / len(rows)
            fid = sum(r["text_fidelity"] for r in rows) / len(rows)
            print(f"{label} single: similarity {sim:.3f} fidelity {fid:.3f}", flush=True)
        total = []
        for a, b in pairs:
            prompts = pair_prompts(a, b, f"<{a}>", f"<{b}>")
            negatives = [None] * len(prompts)  # the empty prompt, or guidance away from the plain superclass pair
            if args.negative == "superclass":
                negatives = pair_prompts(a, b, CONCEPTS[a]["superclass"], CONCEPTS[b]["superclass"])
            images = torch.cat([generate(pipe, [p], k, args.samples, concepts=[concepts[a], concepts[b]],
                                         negative_prompt=n, **extra)
                                for k, (p, n) in enumerate(zip(prompts, negatives))])  # fmt: skip
            ok = pair_score(checker, images, refs[a], refs[b])
            total += ok
            print(f"{label} {a}+{b}: {sum(ok) / len(ok):.3f}", flush=True)
        print(f"{label} mean: {sum(total) / len(total):.3f}", flush=True)


if __name__ == "__main__":
    main()
