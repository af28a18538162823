"""Learn a Perfusion concept from a few images: the token embedding and o*_V per layer (o*_K too for trained-K).

The concept has one placeholder per piece of its superclass ("red circle": two), each with its own embedding
(initialised from its piece's), i*, o*_V and key (locked to its piece's key in the same prompt), learned jointly.
i* is an exponential moving average (0.99, bias-corrected) of the placeholder's encodings while the embedding
trains; the stored i* is its mean encoding under the final embedding, and the last steps train o* alone
against it (key-locking holds only while i* matches the embedding); the gate trains at beta 0.75, tau 0.1;
the embedding and the target outputs have separate learning rates (per-parameter groups: Adam cancels gradient
scaling); images are augmented with flips and crops; the masked-token loss is weighted by a soft object mask from
the model's own cross-attention map of the superclass word (no external segmenter).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from musekit.editing.inpaint import encode_stages
from musekit.editing.masks import image_to_tensor, resize
from musekit.models.attention_maps import cross_attention_maps, word_map
from musekit.personalize.apply import encode_concept_prompts, installed_edits, local_key_targets
from musekit.personalize.concept import VARIANTS, Concept, model_fingerprint, stages
from musekit.personalize.rank_one import ConceptTarget
from musekit.personalize.tokens import piece_positions, register_pieces, substitute, superclass_ids, superclass_phrase
from musekit.training.objectives import mask_tokens, masked_token_loss

logger = logging.getLogger(__name__)

TEMPLATES = ("a {}", "a picture of a {}", "an image of a {}", "a {} in the picture", "a drawing of a {}",
             "a {} on a background", "the {}", "a {} shape")  # fmt: skip


@dataclass(frozen=True)
class PersonalizeConfig:
    steps: int = 60  # about 33 s on the bundled model on 2 CPU cores (target: at most 60 s)
    batch_size: int = 4
    embedding_lr: float = 0.006
    output_lr: float = 0.01
    train_beta: float = 0.75
    train_tau: float = 0.1
    input_decay: float = 0.99
    settle_fraction: float = 0.25  # the last steps train o* alone, against the final embedding's exact i*
    mask_floor: float = 0.1  # loss weight of tokens far from the object
    crops_per_image: int = 2
    max_value_ratio: float | None = None  # cap |o*_V| per layer at this multiple of |W_V i*| (None: no cap)
    seed: int = 0


def augmented_views(images: list, size: int, crops: int, generator: torch.Generator) -> torch.Tensor:
    """Each image, its mirror, and random crops (85-100% of the side), all at ``size``: (N, 3, size, size)."""
    views = []
    for image in images:
        x = resize(image_to_tensor(image), size)
        views += [x, x.flip(-1)]
        for _ in range(crops):
            side = int(size * (0.85 + 0.15 * torch.rand(1, generator=generator).item()))
            top, left = torch.randint(0, size - side + 1, (2,), generator=generator).tolist()
            views.append(resize(x[..., top : top + side, left : left + side], size))
    return torch.cat(views)


_MIRRORED = {"left": "right", "right": "left"}


def mirrored_caption(text: str) -> str:
    """The caption of the mirrored image: "left" and "right" swap (whole words only)."""
    return re.sub(r"\b(left|right)\b", lambda m: _MIRRORED[m.group(1)], text)


def view_captions(captions: list[str], token: str, crops: int) -> list[str]:
    """Per view of ``augmented_views``: the image's caption (``{}`` or the token marks the concept), mirrored for the
    mirror view, as is for the crops."""
    out = []
    for text in captions:
        text = text.replace("{}", token)
        if token not in text:
            raise ValueError(f"caption {text!r} does not mention the concept ({token} or {{}})")
        out += [text, mirrored_caption(text)] + [text] * crops
    return out


def view_prompts_for(captions: list[str] | None, num_images: int, token: str, crops: int) -> list[str] | None:
    """``view_captions`` after checking there is one caption per image; None without captions (templates)."""
    if captions is None:
        return None
    if len(captions) != num_images:
        raise ValueError(f"captions: one per image ({num_images}), got {len(captions)}")
    return view_captions(captions, token, crops)


def step_prompts(view_prompts: list[str] | None, token: str, pick: torch.Tensor, generator) -> list[str]:
    """A step's prompts: the picked views' captions, or random templates (drawn either way, one random stream)."""
    templates = torch.randint(0, len(TEMPLATES), (len(pick),), generator=generator).tolist()
    if view_prompts is None:
        return [TEMPLATES[t].format(token) for t in templates]
    return [view_prompts[i] for i in pick.tolist()]


@torch.no_grad()
def object_weights(
    pipe, base_ids: torch.Tensor, superclass: str, floor: float, prompts: list[str] | None = None
) -> torch.Tensor:
    """(N, h, w) loss weights in [floor, 1] from the base model's cross-attention map of the superclass word, in
    "a {superclass}" or in each view's own prompt (``prompts``, with the superclass in place of the concept)."""
    encoder = pipe.text_encoder
    model = pipe.transformer
    pieces = superclass_ids(encoder, superclass)
    prompts = prompts or [f"a {superclass}"] * base_ids.shape[0]
    maps = torch.zeros(base_ids.shape, dtype=torch.float32, device=base_ids.device)
    for prompt in dict.fromkeys(prompts):  # one pass per distinct prompt
        rows = torch.tensor([p == prompt for p in prompts], device=base_ids.device)
        tokens = encoder.tokenize([prompt])[0][0].tolist()
        positions = piece_positions(tokens, pieces)
        cache = model.precompute(encoder.encode([prompt]).expand(int(rows.sum())).to(pipe.device))
        maps[rows] = word_map(cross_attention_maps(model, base_ids[rows], cache), positions, model.config.grid_size)
    return floor + (1 - floor) * maps


def learn_concept(
    pipe,
    images: list,
    token: str,
    superclass: str,
    steps: int | None = None,
    variant: str = "local",
    config: PersonalizeConfig | None = None,
    progress: bool = True,
    captions: list[str] | None = None,
) -> Concept:
    """See ``MusePipeline.learn_concept``. ``captions``: one prompt per image describing it in the model's own words
    (``{}`` or the token marks the concept); training then uses them instead of the generic templates, so the edit
    learns the object and not the background or position."""
    config = config or PersonalizeConfig()
    if steps is not None:
        config = PersonalizeConfig(**{**config.__dict__, "steps": steps})
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not images:
        raise ValueError("learn_concept needs at least one image of the concept")
    start_time = time.perf_counter()
    encoder = pipe.text_encoder
    superclass = superclass_phrase(superclass)
    pieces = superclass_ids(encoder, superclass)
    register_pieces(encoder, token, len(pieces))
    generator = torch.Generator().manual_seed(config.seed)
    models = stages(pipe)
    c_inv = pipe.perfusion_c_inv()

    views = augmented_views(images, pipe.image_size, config.crops_per_image, generator).to(pipe.device)
    view_prompts = view_prompts_for(captions, len(images), token, config.crops_per_image)
    base_ids, high_ids = encode_stages(pipe, views)
    super_prompts = None if view_prompts is None else substitute(view_prompts, token, superclass)
    weights = {"transformer": object_weights(pipe, base_ids, superclass, config.mask_floor, super_prompts)}
    if "superres" in models:
        grid = models["superres"].config.grid_size
        weights["superres"] = F.interpolate(weights["transformer"].unsqueeze(1), size=(grid, grid), mode="bilinear")[
            :, 0
        ]
    stage_ids = {"transformer": base_ids, "superres": high_ids}
    sr_cond = pipe.sr_cond_ids(base_ids) if "superres" in models else None  # what the SR stage is conditioned on

    table = encoder.input_embeddings().weight
    embedding = torch.nn.Parameter(table[pieces].detach().float().clone())  # (P, D): each from its own piece
    value_outputs, key_outputs, target_inputs = {}, {}, {}
    output_params = []
    first_prompts = [TEMPLATES[0].format(token)] * len(images) if view_prompts is None else view_prompts
    with torch.no_grad():
        first = encode_concept_prompts(encoder, first_prompts, [(token, superclass, embedding)])
    for name, model in models.items():
        with torch.no_grad():
            e_super = _piece_means(model.project_text(first.super_text)[0], first.positions[token])  # (P, d)
            target_inputs[name] = torch.zeros_like(e_super)  # the EMA's sum; read through _debiased
            values = torch.stack([e_super @ attn.to_v.weight.t() for attn in model.text_attentions])  # (L, P, d)
            keys = torch.stack([e_super @ attn.to_k.weight.t() for attn in model.text_attentions])
        value_outputs[name] = torch.nn.Parameter(values.clone())
        output_params.append(value_outputs[name])
        if variant == "trained-k":
            key_outputs[name] = torch.nn.Parameter(keys.clone())
            output_params.append(key_outputs[name])
    optimizer = torch.optim.AdamW(
        [{"params": [embedding], "lr": config.embedding_lr}, {"params": output_params, "lr": config.output_lr}],
        weight_decay=0.0,
    )
    final_prompts = [t.format(token) for t in TEMPLATES] if view_prompts is None else view_prompts
    settle_from = config.steps - round(config.steps * config.settle_fraction)
    settled = None  # stage -> the final i*, once the embedding is frozen
    bar = tqdm(range(config.steps), desc=f"learn {token}", disable=not progress)
    for step in bar:
        if step == settle_from:
            settled = _exact_inputs(encoder, models, final_prompts, token, superclass, embedding)
            optimizer.param_groups[0]["lr"] = 0.0  # the embedding stays where i* was measured
        pick = torch.randint(0, views.shape[0], (config.batch_size,), generator=generator)
        prompts = step_prompts(view_prompts, token, pick, generator)
        with torch.set_grad_enabled(settled is None):
            encoded = encode_concept_prompts(encoder, prompts, [(token, superclass, embedding)])
        text, positions = encoded.text, encoded.positions[token]  # (P, B, T)
        loss = torch.zeros(())
        for name, model in models.items():
            with torch.no_grad():  # i*: EMA of each placeholder's encodings in this stage's K/V input space
                current = _piece_means(model.project_text(text)[0].detach(), positions)
                target_inputs[name].lerp_(current, 1 - config.input_decay)
                i_star = _debiased(target_inputs[name], config.input_decay, step + 1)
                if settled is not None:
                    i_star = settled[name]
            layers = len(model.text_attentions)
            if variant == "trained-k":
                key_out = [[key_outputs[name][layer, p] for layer in range(layers)] for p in range(len(pieces))]
            else:
                key_out = [
                    local_key_targets(model, encoded.super_text, where, config.batch_size) for where in positions
                ]
            beta, tau = config.train_beta, config.train_tau
            keys = [[ConceptTarget(i_star[p], key_out[p][layer], beta, tau) for p in range(len(pieces))]
                    for layer in range(layers)]  # fmt: skip
            values = [[ConceptTarget(i_star[p], value_outputs[name][layer, p], beta, tau) for p in range(len(pieces))]
                      for layer in range(layers)]  # fmt: skip
            targets = stage_ids[name][pick]
            inputs, mask = mask_tokens(targets, model.config.mask_token_id, generator)
            cond = sr_cond[pick] if name == "superres" else None
            with installed_edits(model, c_inv[name], keys, values):
                logits = model(inputs, text=text, cond_ids=cond)
            loss = loss + masked_token_loss(logits, targets, mask, weights=weights[name][pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.max_value_ratio is not None:
            inputs = settled or _exact_inputs(encoder, models, final_prompts, token, superclass, embedding)
            _cap_values(models, value_outputs, inputs, config.max_value_ratio)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    # i* for inference: the concept token's mean encoding over the training prompts with the final embedding. The
    # EMA averages over prompts but lags the embedding it is trained with (after 120 steps at 0.99 it still weighs
    # the first 60 steps' encodings by ~45%); a lagging i* leaves W_K(e - s(e) i*) large at the concept token, so its
    # key is no longer locked to the superclass's and its value floods the image (measured: docs/BENCHMARKS.md).
    # The last steps (settle_fraction) train o* against this i* so that sampling sees what training saw.
    target_inputs = settled or _exact_inputs(encoder, models, final_prompts, token, superclass, embedding)
    logger.info("learned %s in %.1f s", token, time.perf_counter() - start_time)
    return Concept(
        token=token,
        superclass=superclass,
        variant=variant,
        embedding=embedding.detach().clone(),
        target_inputs={k: v.detach().clone() for k, v in target_inputs.items()},
        value_outputs={k: v.detach().clone() for k, v in value_outputs.items()},
        key_outputs={k: v.detach().clone() for k, v in key_outputs.items()},
        train_beta=config.train_beta,
        train_tau=config.train_tau,
        fingerprint=model_fingerprint(pipe),
    ).rounded()  # as the file stores it: a reloaded concept draws the same images


@torch.no_grad()
def _cap_values(models, value_outputs, inputs, ratio: float) -> None:
    """Scale each layer's o*_V down to at most ``ratio`` times the norm of the placeholder's own value W_V i*."""
    for name, model in models.items():
        natural = torch.stack([inputs[name] @ attn.to_v.weight.t() for attn in model.text_attentions]).norm(dim=-1)
        norms = value_outputs[name].norm(dim=-1)  # (layers, P)
        value_outputs[name].mul_((ratio * natural / norms.clamp_min(1e-12)).clamp(max=1.0).unsqueeze(-1))


@torch.no_grad()
def _exact_inputs(encoder, models, prompts, token, superclass, embedding) -> dict[str, torch.Tensor]:
    """Per stage, each placeholder's mean encoding over ``prompts`` in the stage's K/V input space: (P, d)."""
    encoded = encode_concept_prompts(encoder, prompts, [(token, superclass, embedding)])
    return {name: _piece_means(model.project_text(encoded.text)[0], encoded.positions[token])
            for name, model in models.items()}  # fmt: skip


def _debiased(average: torch.Tensor, decay: float, updates: int) -> torch.Tensor:
    """An exponential moving average started at zero, divided by the weight its updates carry (as Adam's moments)."""
    return average / (1.0 - decay**updates)


def _token_mean(context: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean over every marked position in the batch: (B, T, d), (B, T) -> (d,)."""
    if not positions.any():
        raise ValueError("the concept token does not occur in the training prompts (truncated?)")
    return context[positions.to(context.device)].mean(0)


def _piece_means(context: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per placeholder, its mean encoding: (B, T, d), (P, B, T) -> (P, d)."""
    return torch.stack([_token_mean(context, where) for where in positions])
