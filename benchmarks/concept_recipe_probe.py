"""Compare concept-learning recipes on the evaluation concepts: single-concept scores over a beta sweep, and the
two-concept rate, as `musekit eval personalize` scores them.

Usage: python benchmarks/concept_recipe_probe.py --recipe LABEL[=JSON] [--recipe ...]
[--concepts bullseye,diamond,crescent] [--betas 0.7] [--samples 4] [--pair-samples 6] [--pair-beta 0.8]
[--cache runs/recipe-probe] [--threads 2]

Each recipe learns every concept once (local variant, per-image captions, as the eval does; cached as concept files
in ``--cache/LABEL`` so reruns skip it: a changed JSON needs a new label) with ``PersonalizeConfig`` fields
overridden by the JSON, and two keys of this probe's own:

* ``"train_context": "isolated"``: while learning, a one-concept prompt is encoded as musekit encodes several
  concepts (the placeholders from the prompt, every other token from the superclass prompt), so the learned embedding
  reaches only its own placeholders' encodings; ``"context": "isolated"`` does the same at inference (default: as
  trained). musekit's own default is "joint" for one concept (every token sees the embedding) and "isolated" for
  several.
* ``"from": DIR``: reuse the concept files in DIR instead of learning (e.g. ``runs/two-concept``, the concepts of
  `benchmarks/two_concept_probe.py`, learned with the defaults).

Prints, per recipe and beta, the mean concept similarity and text fidelity (and each concept's), then the rate of
"a <a> left of a <b> on a ... background" images in which each object cell is closer to its own concept's references
than to the other's (6 ordered pairs x 4 backgrounds x ``--pair-samples``; 0 skips it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from concept_probe_setup import cached, examples_and_references, load_pipeline_and_checker

import musekit.personalize.apply as apply_module
import musekit.personalize.call as call_module
import musekit.personalize.trainer as trainer_module
from musekit.eval.personalize_eval import PersonalizeEvalSettings, score, two_concept_rate
from musekit.personalize.rank_one import DEFAULT_BIAS
from musekit.personalize.trainer import PersonalizeConfig
from musekit.text.base import TextEmbeddings

_encode = apply_module.encode_concept_prompts


def isolated_single(encoder, prompts, concepts, isolate=True):
    """``encode_concept_prompts`` that isolates one concept too (several are isolated anyway): what
    ``isolated_encodings`` gives for one concept, whose prompt is already the one where only it is a placeholder:
    its placeholders' states as encoded, every other token's from the superclass prompt."""
    encoded = _encode(encoder, prompts, concepts, isolate=isolate)
    if len(concepts) == 1:
        text, super_text = encoded.text, encoded.super_text
        where = next(iter(encoded.positions.values())).any(0).to(text.hidden_states.device).unsqueeze(-1)
        hidden = torch.where(where, text.hidden_states, super_text.hidden_states.to(text.hidden_states.device))
        encoded.text = TextEmbeddings(hidden, text.pooled, text.attention_mask)
    return encoded


def use_context(training: str, inference: str) -> None:
    trainer_module.encode_concept_prompts = isolated_single if training == "isolated" else _encode
    call_module.encode_concept_prompts = isolated_single if inference == "isolated" else _encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", required=True, help="LABEL or LABEL=JSON (repeatable)")
    parser.add_argument("--concepts", default="bullseye,diamond,crescent")
    parser.add_argument("--betas", default="0.7")
    parser.add_argument("--samples", type=int, default=4, help="images per one-concept prompt")
    parser.add_argument("--pair-samples", type=int, default=6, help="images per two-concept prompt (0: skip)")
    parser.add_argument(
        "--pair-beta",
        type=float,
        default=DEFAULT_BIAS,
        help="bias of the two-concept rate (the eval's default; 0.7 before 2026-11-25)",
    )
    parser.add_argument("--cache", default="runs/recipe-probe")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pipe, checker = load_pipeline_and_checker(args.threads)
    names = args.concepts.split(",")
    examples, refs = examples_and_references(pipe, checker, names)
    for recipe in args.recipe:
        label, _, text = recipe.partition("=")
        options = json.loads(text or "{}")
        training = options.pop("train_context", "joint")
        inference = options.pop("context", training)
        source = options.pop("from", None)
        config = PersonalizeConfig(**options)
        folder = Path(source or Path(args.cache) / label)
        use_context(training, inference)
        learned = {}
        for name in names:
            path = folder / f"{name}.safetensors"
            if source and not path.is_file():
                raise SystemExit(f'{path} not found (a recipe with "from" only reuses concept files)')
            start = time.perf_counter()
            learned[name], new = cached(pipe, name, examples[name], path, config)
            if new:
                print(f"{label}: learned {name} in {time.perf_counter() - start:.1f} s", flush=True)
        for beta in (float(b) for b in args.betas.split(",")):
            rows = [score(pipe, checker, f"<{n}>", n, refs[n], 0, args.samples, concepts=[learned[n]],
                          concept_bias=beta) for n in names]  # fmt: skip
            sims = [r["concept_similarity"] for r in rows]
            fids = [r["text_fidelity"] for r in rows]
            each_sim = " ".join(f"{s:.3f}" for s in sims)
            each_fid = " ".join(f"{f:.3f}" for f in fids)
            print(f"{label} beta {beta}: similarity {sum(sims) / len(sims):.3f} ({each_sim}) "
                  f"fidelity {sum(fids) / len(fids):.3f} ({each_fid})", flush=True)  # fmt: skip
        if args.pair_samples:
            settings = PersonalizeEvalSettings(concepts=tuple(names), default_beta=args.pair_beta,
                                               two_concept_samples=args.pair_samples)  # fmt: skip
            pairs = two_concept_rate(pipe, checker, {(n, "perfusion"): learned[n] for n in names}, refs, settings)
            detail = ", ".join(f"{k} {v:.2f}" for k, v in pairs.items() if k != "mean")
            print(f"{label} pairs (beta {args.pair_beta}): {pairs['mean']:.3f} ({detail})", flush=True)


if __name__ == "__main__":
    main()
