"""Do held-out (colour, shape) pairs go wrong in the text encoder? Swap token encodings from seen-pair contexts.

For each held-out dev scene (canonical caption), the shape word's encoding is replaced by its mean over the same
caption with every colour seen with that shape (``shape``), the colour word's by its mean over the caption with every
shape seen with that colour (``color``), both (``both``), or the shape word's and the pooled embedding
(``shape+pooled``); ``none`` is the model as shipped. Prints the checker's shape and colour accuracy of the final
images (batches of 8 seeded with their first index, as ``sampling_probe.py`` does).

Usage: python benchmarks/binding_probe.py none shape color both shape+pooled [--num 240] [--start 1000]
"""

from __future__ import annotations

import re

from heldout_probe_setup import load_probe, parse_probe_args, shape_and_colour_hits

from musekit.data.shapes import COLORS, HELDOUT_PAIRS, SHAPES

VARIANTS = ("none", "shape", "color", "both", "shape+pooled")


def swapped(encode, tokenizer, prompts, variant: str):
    """``encode(prompts)`` with the held-out pair's word encodings replaced as ``variant`` says."""
    out = encode(prompts)
    states, pooled = out.hidden_states.clone(), out.pooled.clone()
    for row, caption in enumerate(prompts):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(caption)["input_ids"])
        color = next(w for w in pieces if w in COLORS)
        shape = next(w for w in pieces if w in SHAPES)
        if (color, shape) not in HELDOUT_PAIRS:
            continue
        if variant in ("shape", "both", "shape+pooled"):
            donors = [re.sub(rf"\b{color}\b", c, caption, count=1) for c in COLORS
                      if c != color and (c, shape) not in HELDOUT_PAIRS]  # fmt: skip
            donor = encode(donors)
            states[row, pieces.index(shape)] = donor.hidden_states[:, pieces.index(shape)].mean(0)
            if variant == "shape+pooled":
                pooled[row] = donor.pooled.mean(0)
        if variant in ("color", "both"):
            donors = [re.sub(rf"\b{shape}\b", s, caption, count=1) for s in SHAPES
                      if s != shape and (color, s) not in HELDOUT_PAIRS]  # fmt: skip
            states[row, pieces.index(color)] = encode(donors).hidden_states[:, pieces.index(color)].mean(0)
    out.hidden_states, out.pooled = states, pooled
    return out


def main() -> None:
    args = parse_probe_args(__doc__, lambda p: p.add_argument("variants", nargs="+", choices=VARIANTS))
    pipe, checker, examples = load_probe(args)
    captions = [e.scene.canonical_caption() for e in examples]
    encoder = pipe.text_encoder
    encode = encoder.encode
    try:
        for variant in args.variants:
            encoder.encode = (
                encode
                if variant == "none"
                else (lambda ps, v=variant: swapped(encode, encoder.tokenizer, ps if isinstance(ps, list) else [ps], v))
            )
            shape, color = shape_and_colour_hits(pipe, checker, examples, captions)
            print(f"{variant}: shape {shape}/{len(examples)} = {shape / len(examples):.1%}, "
                  f"colour {color / len(examples):.1%}", flush=True)  # fmt: skip
    finally:
        encoder.encode = encode


if __name__ == "__main__":
    main()
