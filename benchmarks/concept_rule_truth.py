"""Does `musekit eval personalize` read the truth as the truth? Its position reads and pair rule on exact renders.

Usage: python benchmarks/concept_rule_truth.py [--concepts bullseye,diamond,crescent,arrow,ring,flag] [--generated 64]
[--renders 400] [--through-tokenizers] [--threads 2]

For every concept, exact renders (``concept_scene``) at each one-object prompt's position and background, large and
small: the share whose position is read right by the checker's position head and by the pixels
(``object_positions``, what the harness uses). For every ordered pair of concepts, exact renders of "a <a> left of a
<b>" (``concept_pair_scene``) in each row on the pair's four evaluation backgrounds: the two-concept rule's pass rate
with the pair's row found by the checker's position head (the harness before 2026-11-26) and by the pixels
(``pair_cells``), and with the two concepts' references swapped (should be 0). With ``--generated N``, the bundled
model draws N one-object and N/2 two-object prompts of the shapes world's own shapes (which the checker's head reads
right) and the script prints how often the pixel reads agree with the head. With ``--renders N``, the first N
held-out one-object scenes of the shapes world on plain backgrounds, rendered: the share whose position each reader
gets right. With ``--through-tokenizers``, the pair renders also go through the bundled model's tokenizers as a
perfect base transformer's tokens would (downsampled to 64 px, base tokens, decoded; upsampled and re-tokenized by
the super-resolution tokenizer, the start its stage refines): the rule's pass rate there is what the tokenizers
leave of each concept at pair size.
"""

from __future__ import annotations

import argparse

import torch

from musekit.data.concepts import CONCEPTS, backgrounds_for, concept_examples, concept_pair_scene, concept_scene
from musekit.data.shapes import COLORS, POSITIONS, SHAPES, with_articles
from musekit.editing.masks import image_to_tensor
from musekit.eval.checker import load_checker
from musekit.eval.personalize_eval import (
    ONE_OBJECT_POSITIONS,
    concept_references,
    object_positions,
    pair_cells,
    pair_rule,
    pair_success,
    prompts_for,
)

ROWS = ("top", "middle", "bottom")


def head_pair_cells(positions: torch.Tensor) -> list[tuple[str, str]]:
    """The harness's row reader before 2026-11-26: the first object's cell by the checker's position head, falling
    back to the middle row when that is not a left-column cell."""
    out = []
    for index in positions.tolist():
        row, col = divmod(index, 3)
        row = row if col == 0 else 1
        out.append((POSITIONS[3 * row], POSITIONS[3 * row + 2]))
    return out


@torch.no_grad()
def through_tokenizers(pipe, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """128 px ``images`` as (the SR tokenizer's reconstruction, the base tokenizer's 64 px reconstruction upsampled,
    the super-resolution stage's start from those base tokens: ``upsampled_start_ids`` with nothing re-masked)."""
    from musekit.editing.img2img import upsampled_start_ids
    from musekit.editing.masks import resize

    sr = pipe.sr_tokenizer
    alone = sr.decode(sr.encode(images)).clamp(0.0, 1.0)
    base_ids = pipe.vqgan.encode(resize(images, pipe.base_image_size))
    up = resize(pipe.vqgan.decode(base_ids), pipe.image_size).clamp(0.0, 1.0)
    return alone, up, sr.decode(upsampled_start_ids(pipe, base_ids, 0.0, None)).clamp(0.0, 1.0)


def position_reads(checker, names: list[str]) -> None:
    """One-object exact renders: how often the checker's position head and the pixels read the position right."""
    print("one-object exact renders, position read right (checker head / pixels):")
    for name in names:
        specs = [s for _, s in prompts_for(f"<{name}>", name) if "color2" not in s]
        head = pixels = 0
        for large in (True, False):
            images = torch.cat([image_to_tensor(concept_scene(name, s["position"], s["background"], 128, large))
                                for s in specs])  # fmt: skip
            truth = torch.tensor([POSITIONS.index(s["position"]) for s in specs])
            head += int((checker.predict(images)["position"] == truth).sum())
            pixels += int((object_positions(images) == truth).sum())
        print(f"  {name}: {head} / {2 * len(specs)}  {pixels} / {2 * len(specs)}")


def pair_renders(a: str, b: str) -> torch.Tensor:
    """Exact renders of "a <a> left of a <b>" in each row on the pair's four evaluation backgrounds."""
    backgrounds = [bg for bg in backgrounds_for(a) if bg in backgrounds_for(b)][:4]
    return torch.cat([image_to_tensor(concept_pair_scene(a, b, row, bg)) for bg in backgrounds for row in ROWS])


def print_rates(pairs: list[tuple[str, str]], rows: list[torch.Tensor], counts: list[int] | None = None) -> None:
    """Per ordered pair its rates (one tensor each, in ``pairs``' order), then their mean."""
    for k, ((a, b), rates) in enumerate(zip(pairs, rows)):
        count = f" ({counts[k]} images)" if counts else ""
        print(f"  {a}+{b}{count}: " + " / ".join(f"{rate:.1%}" for rate in rates))
    mean = torch.stack(rows).mean(0)
    print("  mean: " + " / ".join(f"{rate:.1%}" for rate in mean))


def pair_rule_reads(checker, pairs: list[tuple[str, str]], refs: dict) -> None:
    """The two-concept rule on exact pair renders, with the row found by the checker's head and by the pixels."""
    print("two-concept rule on exact pair renders (row by checker head / by pixels / pixels, references swapped):")
    rows, counts = [], []
    for a, b in pairs:
        images = pair_renders(a, b)
        by_head, by_pixels = head_pair_cells(checker.predict(images)["position"]), pair_cells(images)
        rows.append(torch.tensor([
            pair_rule(checker, images, by_head, refs[a], refs[b]).float().mean(),
            pair_rule(checker, images, by_pixels, refs[a], refs[b]).float().mean(),
            pair_rule(checker, images, by_pixels, refs[b], refs[a]).float().mean(),
        ]))  # fmt: skip
        counts.append(len(images))
    print_rates(pairs, rows, counts)


def pair_rule_through_tokenizers(checker, pairs: list[tuple[str, str]], refs: dict) -> None:
    """The two-concept rule on exact pair renders after the bundled model's tokenizers (``through_tokenizers``)."""
    from musekit.pipeline import MusePipeline

    pipe = MusePipeline.from_pretrained(None)
    print("two-concept rule on pair renders through the tokenizers (SR tokenizer alone / base 64 px, upsampled /"
          " base, then the SR stage's start):")  # fmt: skip
    rows = []
    for a, b in pairs:
        rows.append(torch.tensor([pair_success(checker, x, refs[a], refs[b]).float().mean()
                                  for x in through_tokenizers(pipe, pair_renders(a, b))]))  # fmt: skip
    print_rates(pairs, rows)


def held_out_render_reads(checker, count: int) -> None:
    """The first ``count`` held-out one-object shapes-world scenes on plain backgrounds, rendered: the share whose
    position each reader gets right."""
    from musekit.data.drawing import render
    from musekit.data.shapes import ShapesWorld, scene_labels

    examples = ShapesWorld().examples("heldout", 3 * count)
    plain = [e for e in examples if e.scene.background in (*COLORS, "gray")][:count]
    images = torch.cat([image_to_tensor(render(e.scene)) for e in plain])
    truth = torch.tensor([scene_labels(e.scene)["position"] for e in plain])
    head = (checker.predict(images)["position"] == truth).float().mean()
    pixels = (object_positions(images) == truth).float().mean()
    print(f"held-out shapes-world renders, plain backgrounds ({len(plain)}): head {head:.1%}, pixels {pixels:.1%}")


def generated_reads(checker, count: int) -> None:
    """The bundled model draws ``count`` one-object and ``count // 2`` two-object prompts of the shapes world's own
    shapes: how often the pixel reads agree with the checker's head."""
    from musekit.pipeline import MusePipeline

    pipe = MusePipeline.from_pretrained(None)
    pipe.progress_bar = False
    colors = list(COLORS)
    prompts = []
    for k in range(count):
        color, shape = colors[k % len(colors)], SHAPES[(3 * k) % len(SHAPES)]
        background = [c for c in colors if c != color][(5 * k) % (len(colors) - 1)]
        position = ONE_OBJECT_POSITIONS[k % len(ONE_OBJECT_POSITIONS)]
        where = "in the center" if position == "center" else f"at the {position}"
        size = "large" if k % 2 else "small"
        prompts.append(with_articles(f"a {size} {color} {shape} {where} on a {background} background"))
    images = torch.cat([pipe(prompts[i : i + 8], generator=torch.Generator().manual_seed(i),
                             output_type="pt").images for i in range(0, len(prompts), 8)])  # fmt: skip
    agree = (object_positions(images) == checker.predict(images)["position"]).float().mean()
    print(f"generated one-object images ({len(images)}): pixel position = checker head {agree:.1%}")
    prompts = []
    for k in range(count // 2):
        c1, c2 = colors[k % len(colors)], colors[(k + 3) % len(colors)]
        s1, s2 = SHAPES[k % len(SHAPES)], SHAPES[(k + 2) % len(SHAPES)]
        background = [c for c in colors if c not in (c1, c2)][k % (len(colors) - 2)]
        prompts.append(with_articles(f"a {c1} {s1} left of a {c2} {s2} on a {background} background"))
    images = torch.cat([pipe(prompts[i : i + 8], generator=torch.Generator().manual_seed(100 + i),
                             output_type="pt").images for i in range(0, len(prompts), 8)])  # fmt: skip
    head = head_pair_cells(checker.predict(images)["position"])
    agree = sum(h == p for h, p in zip(head, pair_cells(images))) / len(head)
    print(f"generated two-object images ({len(images)}): pixel row = checker head row {agree:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", default=",".join(CONCEPTS))
    parser.add_argument("--generated", type=int, default=0, help="also check N generated shapes-world images")
    parser.add_argument("--renders", type=int, default=0, help="also read N held-out shapes-world renders")
    parser.add_argument("--through-tokenizers", action="store_true",
                        help="also score the pair renders after the bundled model's tokenizers")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checker = load_checker()
    names = args.concepts.split(",")
    position_reads(checker, names)
    refs = {n: concept_references(checker, concept_examples(n, 5, 128, 0)) for n in names}
    pairs = [(a, b) for a in names for b in names if a != b]
    pair_rule_reads(checker, pairs, refs)
    if args.through_tokenizers:
        pair_rule_through_tokenizers(checker, pairs, refs)
    if args.renders:
        held_out_render_reads(checker, args.renders)
    if args.generated:
        generated_reads(checker, args.generated)


if __name__ == "__main__":
    main()
