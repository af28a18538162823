"""Baselines in the same harness as Perfusion, so comparisons are fair.

* Textual Inversion: the token embedding only.
* Custom Diffusion (style): the embedding plus every cross-attention's K and V weights.
* DreamBooth (style): the embedding plus every transformer weight, with prior preservation on superclass prompts
  (images the original model generates for "a {superclass}").

All use the same images, augmentations, prompts (templates or per-image captions) and masked-token loss (unweighted,
as published).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from musekit.editing.inpaint import encode_stages
from musekit.personalize.apply import encode_concept_prompts
from musekit.personalize.concept import Concept, model_fingerprint, stages
from musekit.personalize.tokens import substitute, superclass_ids, superclass_phrase
from musekit.personalize.trainer import PersonalizeConfig, augmented_views, step_prompts, view_prompts_for
from musekit.training.objectives import mask_tokens, masked_token_loss

BASELINES = ("textual-inversion", "custom-diffusion", "dreambooth")
WEIGHT_LR = {"custom-diffusion": 1e-4, "dreambooth": 5e-5}


def trainable_weights(pipe, method: str) -> dict[str, torch.nn.Parameter]:
    out = {}
    for stage, model in stages(pipe).items():
        for name, param in model.named_parameters():
            if method == "dreambooth" or (method == "custom-diffusion" and ".cross_attn.to_" in name and
                                          name.rsplit(".", 2)[-2] in ("to_k", "to_v")):  # fmt: skip
                out[f"{stage}::{name}"] = param
    return out


def learn_baseline(
    pipe,
    images: list,
    token: str,
    superclass: str,
    method: str,
    steps: int | None = None,
    config: PersonalizeConfig | None = None,
    prior_images: int = 8,
    prior_weight: float = 1.0,
    progress: bool = True,
    captions: list[str] | None = None,
) -> Concept:
    """Train one baseline; the pipeline's weights are restored afterwards (the result lives in the Concept).
    ``captions`` as in ``learn_concept`` (DreamBooth's prior images are then drawn from them, superclass in place)."""
    if method not in BASELINES:
        raise ValueError(f"method must be one of {BASELINES}, got {method!r}")
    config = config or PersonalizeConfig()
    steps = steps or config.steps
    start = time.perf_counter()
    encoder = pipe.text_encoder
    superclass = superclass_phrase(superclass)
    pieces = superclass_ids(encoder, superclass)
    generator = torch.Generator().manual_seed(config.seed)
    views = augmented_views(images, pipe.image_size, config.crops_per_image, generator).to(pipe.device)
    view_prompts = view_prompts_for(captions, len(images), token, config.crops_per_image)
    ids = dict(zip(("transformer", "superres"), encode_stages(pipe, views)))
    prior = None
    if method == "dreambooth":  # prior preservation: the model's own superclass images, made before training
        prior_prompts = [f"a {superclass}"] * prior_images
        if view_prompts is not None:
            super_captions = substitute([c.replace("{}", token) for c in captions], token, superclass)
            prior_prompts = [super_captions[k % len(super_captions)] for k in range(prior_images)]
        progress_state, pipe.progress_bar = pipe.progress_bar, False
        out = pipe(prior_prompts, generator=torch.Generator().manual_seed(1), output_type="ids")
        pipe.progress_bar = progress_state
        prior = {"transformer": out.base_ids, "superres": out.ids, "cond": pipe.sr_cond_ids(out.base_ids),
                 "prompts": prior_prompts}  # fmt: skip
    sr_cond = pipe.sr_cond_ids(ids["transformer"]) if pipe.superres is not None else None
    embedding = torch.nn.Parameter(encoder.input_embeddings().weight[pieces].detach().float().clone())  # (P, D)
    weights = trainable_weights(pipe, method)
    originals = {k: p.detach().clone() for k, p in weights.items()}
    for p in weights.values():
        p.requires_grad_(True)
    groups = [{"params": [embedding], "lr": config.embedding_lr}]
    if weights:
        groups.append({"params": list(weights.values()), "lr": WEIGHT_LR[method]})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    models = stages(pipe)
    try:
        for model in models.values():
            model.train()
        for _ in tqdm(range(steps), desc=f"{method} {token}", disable=not progress):
            pick = torch.randint(0, views.shape[0], (config.batch_size,), generator=generator)
            prompts = step_prompts(view_prompts, token, pick, generator)
            text = encode_concept_prompts(encoder, prompts, [(token, superclass, embedding)]).text
            loss = torch.zeros(())
            for name, model in models.items():
                loss = loss + _loss(model, ids[name][pick], text, sr_cond[pick] if name == "superres" else None,
                                    generator)  # fmt: skip
                if prior is not None:
                    index = torch.randint(0, prior[name].shape[0], (config.batch_size,), generator=generator)
                    prior_text = encoder.encode([prior["prompts"][i] for i in index.tolist()])
                    cond = prior["cond"][index] if name == "superres" else None
                    loss = loss + prior_weight * _loss(model, prior[name][index], prior_text, cond, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trained = {k: p.detach().clone() for k, p in weights.items()}
    finally:
        for key, param in weights.items():
            param.requires_grad_(False)
            param.data.copy_(originals[key])
            param.grad = None
        for model in models.values():
            model.eval()
    concept = Concept(token=token, superclass=superclass, variant="local", embedding=embedding.detach().clone(),
                      target_inputs={}, value_outputs={}, fingerprint=model_fingerprint(pipe), method=method,
                      weights=trained).rounded()  # fmt: skip
    concept.train_seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    return concept


def _loss(model, targets, text, cond, generator) -> torch.Tensor:
    inputs, mask = mask_tokens(targets, model.config.mask_token_id, generator)
    return masked_token_loss(model(inputs, text=text, cond_ids=cond), targets, mask)
