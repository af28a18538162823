"""Does emphasising the shape word help held-out (colour, shape) pairs? A probe for issue 4's held-out shape target.

Scales the text encoder's output at the prompt's shape-word tokens by WEIGHT (so the cross-attention keys and values
of that word grow with it) and reads the generated shapes with the checker, on held-out scenes that are not
evaluation prompts (index 1000 on, canonical captions; batches of 8 seeded with their first index, as
``sampling_probe.py`` does). WEIGHT 0 removes the word (a check that the knob acts), 1 is the model as shipped.

Usage: python benchmarks/emphasis_probe.py 1.0 2.0 3.0 [--num 240] [--threads 2]
"""

from __future__ import annotations

from heldout_probe_setup import load_probe, parse_probe_args, shape_and_colour_hits

from musekit.data.shapes import SHAPES


def main() -> None:
    args = parse_probe_args(__doc__, lambda p: p.add_argument("weights", nargs="+", type=float))
    pipe, checker, scenes = load_probe(args)
    encoder, encode = pipe.text_encoder, pipe.text_encoder.encode
    for weight in args.weights:

        def emphasised(prompts, weight=weight):
            out = encode(prompts)
            states = out.hidden_states.clone()
            for row, prompt in enumerate(prompts if isinstance(prompts, list) else [prompts]):
                pieces = encoder.tokenizer.convert_ids_to_tokens(encoder.tokenizer(prompt)["input_ids"])
                for position, piece in enumerate(pieces[: states.shape[1]]):
                    if piece in SHAPES:
                        states[row, position] *= weight
            out.hidden_states = states
            return out

        encoder.encode = emphasised
        right, _ = shape_and_colour_hits(pipe, checker, scenes, [e.caption for e in scenes])
        print(f"weight {weight}: shape {right}/{len(scenes)} = {right / len(scenes):.1%}", flush=True)
    encoder.encode = encode


if __name__ == "__main__":
    main()
