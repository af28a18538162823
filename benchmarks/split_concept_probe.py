"""Experiment (not yet a musekit feature): a concept as one placeholder per superclass word, each key-locked to its own
word, against one placeholder key-locked to the phrase's mean key (musekit's concept since version 10's phrase
superclasses).

Usage: python benchmarks/split_concept_probe.py [--threads 2]

For each evaluation concept (bullseye, diamond, crescent; 5 images with captions, 60 steps, local variant, the
trainer's defaults), "red circle" becomes two placeholders "<bullseye0> <bullseye1>" in every prompt, each with its own
embedding (initialised from its word's), i* and o*_V per layer, learned jointly; the superclass prompt then has the
same positions as the concept prompt, so each placeholder's key is locked to its own word's key in the same prompt
(the colour word's key for the first, the shape word's for the second). At inference the placeholders are separate
``Concept`` objects in musekit's exact multi-concept edit. Prints the scores of `musekit eval personalize`'s
`score` at beta 0.5/0.7/0.9 (2 samples per prompt) and the two-concept rate at beta 0.7 (its rule, 8 images per
ordered pair).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from musekit.data.concepts import CONCEPTS, backgrounds_for, concept_examples
from musekit.data.shapes import with_articles
from musekit.editing.inpaint import encode_stages
from musekit.editing.masks import image_to_tensor
from musekit.eval.checker import load_checker
from musekit.eval.personalize_eval import generate, pair_cells, region_embeddings, score
from musekit.personalize.apply import installed_edits, local_key_targets
from musekit.personalize.concept import Concept, model_fingerprint, stages
from musekit.personalize.rank_one import ConceptTarget
from musekit.personalize.tokens import encode_with_concepts, register_pieces, substitute, superclass_ids
from musekit.personalize.trainer import (
    PersonalizeConfig,
    _debiased,
    _token_mean,
    augmented_views,
    object_weights,
    step_prompts,
    view_prompts_for,
)
from musekit.pipeline import MusePipeline
from musekit.training.objectives import mask_tokens, masked_token_loss


def learn_split(pipe, images, name, words, captions, config: PersonalizeConfig | None = None):
    """Returns (the placeholders as a prompt phrase, one ``Concept`` per placeholder)."""
    config = config or PersonalizeConfig()
    t0 = time.perf_counter()
    enc = pipe.text_encoder
    tokens = [f"<{name}{j}>" for j in range(len(words))]
    phrase = " ".join(tokens)
    tids = [register_pieces(enc, t, 1)[0] for t in tokens]
    gen = torch.Generator().manual_seed(config.seed)
    models = stages(pipe)
    c_inv = pipe.perfusion_c_inv()
    views = augmented_views(images, pipe.image_size, config.crops_per_image, gen)
    vprompts = view_prompts_for(
        [c.replace("{}", phrase) for c in captions], len(images), tokens[0], config.crops_per_image
    )
    base_ids, high_ids = encode_stages(pipe, views)

    def sup(ps):
        for t, w in zip(tokens, words):
            ps = substitute(ps, t, w)
        return ps

    weights = {"transformer": object_weights(pipe, base_ids, " ".join(words), config.mask_floor, sup(vprompts))}
    grid = models["superres"].config.grid_size
    weights["superres"] = F.interpolate(weights["transformer"].unsqueeze(1), size=(grid, grid), mode="bilinear")[:, 0]
    stage_ids = {"transformer": base_ids, "superres": high_ids}
    sr_cond = pipe.sr_cond_ids(base_ids)
    table = enc.input_embeddings().weight
    embs = [torch.nn.Parameter(table[superclass_ids(enc, w)].detach().float().mean(0).clone()) for w in words]
    vo, ti = {}, {}
    with torch.no_grad():
        s0 = enc.encode(sup(vprompts))
        _, ids0 = encode_with_concepts(enc, vprompts, dict(zip(tids, embs)))
    outs = []
    for n, m in models.items():
        with torch.no_grad():
            ctx = m.project_text(s0)[0]
            es = [_token_mean(ctx, ids0 == t) for t in tids]
            ti[n] = [torch.zeros_like(e) for e in es]
            vo[n] = torch.nn.Parameter(
                torch.stack([torch.stack([a.to_v.weight @ e for e in es]) for a in m.text_attentions])
            )
        outs.append(vo[n])
    opt = torch.optim.AdamW(
        [{"params": embs, "lr": config.embedding_lr}, {"params": outs, "lr": config.output_lr}], weight_decay=0.0
    )
    settle_from = config.steps - round(config.steps * config.settle_fraction)
    settled = None

    def exact():
        with torch.no_grad():
            text, ids = encode_with_concepts(enc, vprompts, dict(zip(tids, embs)))
            return {n: [_token_mean(m.project_text(text)[0], ids == t) for t in tids] for n, m in models.items()}

    for step in range(config.steps):
        if step == settle_from:
            settled = exact()
            opt.param_groups[0]["lr"] = 0.0
        pick = torch.randint(0, views.shape[0], (config.batch_size,), generator=gen)
        prompts = step_prompts(vprompts, tokens[0], pick, gen)
        with torch.set_grad_enabled(settled is None):
            text, ids = encode_with_concepts(enc, prompts, dict(zip(tids, embs)))
        with torch.no_grad():
            st = enc.encode(sup(prompts))
        loss = 0
        for n, m in models.items():
            with torch.no_grad():
                ctx = m.project_text(text)[0].detach()
                istar = []
                for j, t in enumerate(tids):
                    ti[n][j].lerp_(_token_mean(ctx, ids == t), 1 - config.input_decay)
                    istar.append(settled[n][j] if settled else _debiased(ti[n][j], config.input_decay, step + 1))
            L = len(m.text_attentions)
            kos = [local_key_targets(m, st, ids == t, config.batch_size) for t in tids]
            keys = [[ConceptTarget(istar[j], kos[j][layer], 0.75, 0.1) for j in range(len(tids))] for layer in range(L)]
            vals = [
                [ConceptTarget(istar[j], vo[n][layer, j], 0.75, 0.1) for j in range(len(tids))] for layer in range(L)
            ]
            tg = stage_ids[n][pick]
            inp, mask = mask_tokens(tg, m.config.mask_token_id, gen)
            with installed_edits(m, c_inv[n], keys, vals):
                logits = m(inp, text=text, cond_ids=sr_cond[pick] if n == "superres" else None)
            loss = loss + masked_token_loss(logits, tg, mask, weights=weights[n][pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    settled = settled or exact()
    fp = model_fingerprint(pipe)
    cs = [
        Concept(
            token=tokens[j],
            superclass=words[j],
            variant="local",
            embedding=embs[j].detach().clone(),
            target_inputs={n: settled[n][j].clone() for n in models},
            value_outputs={n: vo[n][:, j].detach().clone() for n in models},
            key_outputs={},
            train_beta=0.75,
            train_tau=0.1,
            fingerprint=fp,
        ).rounded()
        for j in range(len(tids))
    ]
    print(f"learned {name} split in {time.perf_counter() - t0:.1f} s", flush=True)
    return phrase, cs


def two_concept_rate(pipe, checker, learned, refs, names) -> dict:
    """`musekit eval personalize`'s two-concept rule for split concepts."""
    res = {}
    for a in names:
        for b in names:
            if a == b:
                continue
            bgs = [bg for bg in backgrounds_for(a) if bg in backgrounds_for(b)][:4]
            prompts = [with_articles(f"a {learned[a][0]} left of a {learned[b][0]} on a {bg} background") for bg in bgs]
            imgs = generate(pipe, prompts, 0, 2, concepts=learned[a][1] + learned[b][1], concept_bias=0.7)
            cells = pair_cells(checker.predict(imgs)["position"])
            left = region_embeddings(checker, imgs, [c[0] for c in cells])
            right = region_embeddings(checker, imgs, [c[1] for c in cells])
            ok_a = (left @ refs[a].t()).mean(1) > (left @ refs[b].t()).mean(1)
            ok_b = (right @ refs[b].t()).mean(1) > (right @ refs[a].t()).mean(1)
            res[f"{a}+{b}"] = (ok_a & ok_b).float().mean().item()
    res["mean"] = sum(res.values()) / len(res)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained()
    pipe.progress_bar = False
    checker = load_checker()
    names = ("bullseye", "diamond", "crescent")
    learned, refs, means = {}, {}, {}
    for name in names:
        ex = concept_examples(name, 5, pipe.image_size, 0)
        refs[name] = region_embeddings(checker, torch.cat([image_to_tensor(e[0]) for e in ex]), [e[1] for e in ex])
        words = CONCEPTS[name]["superclass"].split()
        learned[name] = learn_split(pipe, [e[0] for e in ex], name, words, [e[2] for e in ex])
        for beta in (0.5, 0.7, 0.9):
            row = score(pipe, checker, learned[name][0], name, refs[name], 0, 2, concepts=learned[name][1],
                        concept_bias=beta)  # fmt: skip
            means.setdefault(beta, []).append(row)
            print(name, beta, {k: round(v, 3) for k, v in row.items()}, flush=True)
    for beta, rows in means.items():
        sim = sum(r["concept_similarity"] for r in rows) / len(rows)
        fid = sum(r["text_fidelity"] for r in rows) / len(rows)
        print(f"mean beta {beta}: similarity {sim:.3f} fidelity {fid:.3f}")
    print("two concepts at beta 0.7:", two_concept_rate(pipe, checker, learned, refs, names))


if __name__ == "__main__":
    main()
