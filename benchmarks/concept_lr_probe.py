"""Perfusion's output learning rate against concept similarity and text fidelity (quick probe, not the full eval).

Usage: python benchmarks/concept_lr_probe.py [--lrs 0.06,0.02,0.01] [--concepts bullseye,diamond] [--betas 0.5,0.7,0.9]
[--steps 60] [--superclass phrase|shape] [--taus 0.15] [--two-concepts] [--threads 2]

Learns each concept (local variant, per-image captions, as `musekit eval personalize`) at each o* learning rate and
scores it with the eval's own `score` at each beta (2 samples per prompt); prints one line per (lr, concept, beta) and
the mean per (lr, beta), plus the o*_V norms against the concept token's own value W_V i*. ``--superclass shape``
locks each concept's key to its shape word alone ("circle"), as before version 10's phrase superclasses ("red
circle", the default ``phrase``). ``--two-concepts`` also prints the eval's two-concept rate at the default beta
(0.7 before 2026-11-25, now 0.8) for the concepts learned at the last learning rate (with the eval's settings: 6
images per prompt since 2026-11-25, 2 before).
"""

from __future__ import annotations

import argparse

import torch
from concept_probe_setup import examples_and_references, learn, load_pipeline_and_checker

from musekit.data.concepts import CONCEPTS
from musekit.eval.personalize_eval import PersonalizeEvalSettings, score, two_concept_rate
from musekit.personalize.trainer import PersonalizeConfig


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lrs", default="0.06,0.02,0.01")
    parser.add_argument("--concepts", default="bullseye,diamond")
    parser.add_argument("--betas", default="0.5,0.7,0.9")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-value-ratio", type=float, default=None)
    parser.add_argument("--superclass", choices=["phrase", "shape"], default="phrase")
    parser.add_argument("--taus", default="0.15", help="inference gate temperatures")
    parser.add_argument("--two-concepts", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pipe, checker = load_pipeline_and_checker(args.threads)
    names = args.concepts.split(",")
    superclass_key = "superclass" if args.superclass == "phrase" else "shape"
    betas = floats(args.betas)
    means: dict = {}
    learned = {}
    examples, refs_by_name = examples_and_references(pipe, checker, names)
    for lr in floats(args.lrs):
        for name in names:
            refs = refs_by_name[name]
            extra = {} if args.max_value_ratio is None else {"max_value_ratio": args.max_value_ratio}
            config = PersonalizeConfig(steps=args.steps, output_lr=lr, **extra)
            concept = learn(pipe, name, examples[name], config, CONCEPTS[name][superclass_key])
            learned[(name, "perfusion")] = concept
            ratios = []
            for stage, outputs in concept.value_outputs.items():
                model = getattr(pipe, stage)
                i_star = concept.target_inputs[stage].float()
                natural = torch.stack([i_star @ a.to_v.weight.t() for a in model.text_attentions])  # (layers, P, d)
                ratios.append((outputs.float().norm(dim=-1) / natural.norm(dim=-1)).mean().item())
            for beta in betas:
                for tau in floats(args.taus):
                    row = score(pipe, checker, f"<{name}>", name, refs, 0, 2, concepts=[concept], concept_bias=beta,
                                concept_temperature=tau)  # fmt: skip
                    means.setdefault((lr, beta, tau), []).append(row)
                    ratio_text = [round(r, 2) for r in ratios]
                    print(
                        f"lr {lr} {name} beta {beta} tau {tau}: similarity {row['concept_similarity']:.3f} fidelity "
                        f"{row['text_fidelity']:.3f} (o*_V / W_V i* norm ratio per stage {ratio_text})",
                        flush=True,
                    )
    for (lr, beta, tau), rows in means.items():
        sim = sum(r["concept_similarity"] for r in rows) / len(rows)
        fid = sum(r["text_fidelity"] for r in rows) / len(rows)
        print(f"mean lr {lr} beta {beta} tau {tau}: similarity {sim:.3f} fidelity {fid:.3f}")
    if args.two_concepts:
        settings = PersonalizeEvalSettings(concepts=tuple(names))
        rates = two_concept_rate(pipe, checker, learned, refs_by_name, settings)
        print(f"two concepts at beta {settings.default_beta}:", {k: round(v, 3) for k, v in rates.items()})


if __name__ == "__main__":
    main()
