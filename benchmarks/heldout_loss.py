"""Over-fitting check for a base transformer: masked-token loss and accuracy on training scenes (from the token
shards) against fresh scenes of the same split, at fixed masking rates, over all masked tokens and over those an
object touches; plus how many distinct codes the tokenizer uses per base token grid (flat regions spread over many
codes make the base's job harder).

Usage: python benchmarks/heldout_loss.py --base runs/base-patch/final --tokenizer runs/tok/final --shards runs/shards
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from musekit.config import TextEncoderConfig, TransformerConfig, VQConfig
from musekit.data.renders import object_token_coverage
from musekit.data.shapes import SHAPES, ShapesWorld, caption
from musekit.data.tokens import TokenShards, encode_base_ids, render_stages
from musekit.io.checkpoint import load_component
from musekit.models import MaskedTransformer
from musekit.text import build_text_encoder
from musekit.tokenizer import VQModel
from musekit.training.objectives import mask_tokens

RATES = (0.3, 0.6, 0.9)


@torch.no_grad()
def loss_at_rates(model, encoder, world, ids, indices, batch=64) -> list[tuple[float, ...]]:
    """(rate, loss, accuracy, object-token loss, object-token accuracy) over ``ids`` (N, h, w) of the examples
    ``indices``, with seeded captions and masks. Object tokens are those an object touches (the renderer's mask)."""
    examples = [world.example("train", int(i)) for i in indices]
    prompts = [caption(e.scene, np.random.default_rng(0)) for e in examples]
    on_object = object_token_coverage(examples, 4 * ids.shape[-1], ids.shape[-1]).flatten(1) > 0
    rows = []
    for rate in RATES:
        losses, hits, objects = [], [], []
        for start in range(0, len(ids), batch):
            x = ids[start : start + batch]
            ratios = torch.full((len(x),), rate)
            inputs, mask = mask_tokens(x, model.config.mask_token_id, torch.Generator().manual_seed(1), ratios=ratios)
            logits = model(inputs, text=encoder.encode(prompts[start : start + batch]))
            targets = x.flatten(1)
            losses.append(F.cross_entropy(logits[mask], targets[mask], reduction="none"))
            hits.append((logits.argmax(-1)[mask] == targets[mask]).float())
            objects.append(on_object[start : start + batch][mask])
        loss, hit, obj = torch.cat(losses), torch.cat(hits), torch.cat(objects)
        rows.append((rate, *(round(v.mean().item(), 3) for v in (loss, hit, loss[obj], hit[obj]))))
    return rows


@torch.no_grad()
def shape_word_effect(model, encoder, world, vq, allowed, image_size: int, start: int, count: int = 160) -> list:
    """How much the shape word helps: object-token loss on fresh one-object scenes with their canonical caption
    against the same caption with another shape word, at masking rates 0.5 and 1.0: (rate, right, wrong)."""
    examples = [e for e in world.examples("train", 3 * count, start) if len(e.scene.objects) == 1][:count]
    small = render_stages(examples, image_size)[1]
    ids = torch.cat([vq.encode(small[i : i + 64], allowed) for i in range(0, len(small), 64)]).long()
    on_object = object_token_coverage(examples, small.shape[-1], model.config.grid_size).flatten(1) > 0
    rng = np.random.default_rng(0)

    def captions(swap: bool) -> list[str]:
        out = []
        for e in examples:
            o = e.scene.objects[0]
            shape = [s for s in SHAPES if s != o.shape][rng.integers(len(SHAPES) - 1)] if swap else o.shape
            out.append(f"a {o.size} {o.color} {shape} at the {o.position} on a {e.scene.background} background")
        return out

    rows = []
    for rate in (0.5, 1.0):
        ratios = torch.full((len(ids),), rate)
        inputs, mask = mask_tokens(ids, model.config.mask_token_id, torch.Generator().manual_seed(1), ratios=ratios)
        losses = []
        for swap in (False, True):
            logits = model(inputs, text=encoder.encode(captions(swap)))
            ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none").view(len(ids), -1)
            losses.append(round(ce[mask & on_object].mean().item(), 3))
        rows.append((rate, *losses))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--fresh-start", type=int, default=500_000, help="first index of the fresh scenes")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vq = load_component(VQModel, VQConfig, args.tokenizer)
    model = load_component(MaskedTransformer, TransformerConfig, args.base)
    encoder = build_text_encoder(TextEncoderConfig())
    shards = TokenShards(args.shards)
    world = ShapesWorld(shards.meta["world_seed"], jitter=shards.meta.get("jitter", 1.0))  # fresh scenes drawn alike
    n = args.num
    allowed = torch.tensor(model.config.allowed_codes) if model.config.allowed_codes else None
    seen = shards.ids_lo[:n].long()
    if allowed is not None:  # the base predicts a subset of the codebook: its targets use only those codes
        seen = encode_base_ids(vq, world, shards.index[:n], shards.meta["image_size"], allowed, progress=False).long()
    print("(rate, loss, accuracy, object-token loss, object-token accuracy)")
    print("training scenes", loss_at_rates(model, encoder, world, seen, shards.index[:n]))
    with torch.no_grad():
        small = render_stages(world.examples("train", n, args.fresh_start), shards.meta["image_size"])[1]
        fresh = torch.cat([vq.encode(small[i : i + 64], allowed) for i in range(0, n, 64)]).long()
    print("fresh scenes   ", loss_at_rates(model, encoder, world, fresh, range(args.fresh_start, args.fresh_start + n)))
    effect = shape_word_effect(model, encoder, world, vq, allowed, shards.meta["image_size"], args.fresh_start + n)
    print("shape word: (rate, object-token loss with the right shape word, with another)", effect)
    distinct = [int(grid.unique().numel()) for grid in seen]
    print(f"distinct codes per base grid over {n} training scenes: min {min(distinct)}, median "
          f"{int(np.median(distinct))}, max {max(distinct)} (grid of {seen[0].numel()} tokens)")  # fmt: skip


if __name__ == "__main__":
    main()
