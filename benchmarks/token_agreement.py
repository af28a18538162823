"""How much the base transformer agrees with an image's own tokens: renders drawn exactly (jitter 0, as the bundled
base stage was trained) against renders with the world's rendering noise (jitter 1, what `musekit eval edit` and
most user images look like).

Each render is tokenized as image-to-image does and shown to the base transformer under its own caption (conditional,
no guidance). Two readings of each token's log-probability: *visible*, the whole image shown (how image-to-image's
revision scores a kept token; training puts no loss on visible positions), and *masked*, a random 10% of the tokens
masked in each of 10 passes and read where masked (what the model was trained to predict). Tokens the model finds
improbable are the ones the revision re-masks first, whatever the prompt.

Usage: python benchmarks/token_agreement.py [--num 64]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import Example
from musekit.editing.inpaint import encode_stages
from musekit.eval.edit_eval import one_object_scenes
from musekit.pipeline import MusePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    model = pipe.transformer
    scenes = one_object_scenes(args.num, 0)
    for jitter in (1.0, 0.0):
        drawn = [replace(s, jitter=tuple(j * jitter for j in s.jitter)) for s in scenes]
        images = to_float(render_examples([Example(s, s.canonical_caption()) for s in drawn], pipe.image_size))
        ids, _ = encode_stages(pipe, images)
        text = pipe.encode_prompt([s.canonical_caption() for s in drawn], guidance_scale=1.0)
        n = len(drawn)
        cache = model.precompute(text[n:])  # the conditional half
        flat = ids.reshape(n, -1)
        generator = torch.Generator().manual_seed(0)
        for reading, passes in (("visible", 1), ("masked", 10)):
            own_values, agree_values = [], []
            for _ in range(passes):
                hidden = torch.ones_like(flat, dtype=torch.bool)
                shown = flat
                if reading == "masked":
                    hidden = torch.rand(flat.shape, generator=generator) < 0.1
                    shown = flat.masked_fill(hidden, model.config.mask_token_id)
                with torch.no_grad():
                    log_probs = torch.log_softmax(model(shown.view_as(ids), cache=cache).float(), dim=-1)
                own_values.append(log_probs.gather(-1, flat.unsqueeze(-1)).squeeze(-1)[hidden])
                agree_values.append((log_probs.argmax(-1) == flat)[hidden].float())
            own, agree = torch.cat(own_values), torch.cat(agree_values).mean().item()
            print(
                f"jitter {jitter}, {reading}: {n} renders, {own.numel()} tokens read; the model's top token is the "
                f"image's own at {agree:.1%}; log p(own token) mean {own.mean().item():.2f}, median "
                f"{own.median().item():.2g}; {(own < -5).float().mean().item():.1%} below -5",
                flush=True,
            )


if __name__ == "__main__":
    main()
