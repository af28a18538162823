"""Print Markdown tables from the last rows of `musekit eval` JSONL files (shapes, edit, personalize).

Usage: python benchmarks/report.py --dir outputs/eval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def last_row(path: Path) -> dict | None:
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def shapes(row: dict) -> None:
    print("| split | prompts | " + " | ".join(("color", "shape", "position", "size", "background", "color2", "shape2",
                                               "relation")) + " | full prompt |")  # fmt: skip
    print("|---" * 11 + "|")
    for split in ("heldout", "heldout2", "paraphrase"):
        a = row[split]["attributes"]
        cells = [pct(a[k]) if k in a else "-" for k in ("color", "shape", "position", "size", "background", "color2",
                                                         "shape2", "relation")]  # fmt: skip
        print(f"| {split} | {row[split]['prompts']} | " + " | ".join(cells) + f" | {pct(row[split]['full_prompt'])} |")
    t = row["tokenizer"]
    print(f"\nFSD {row['fsd']:.2f}; {row['seconds_per_image']:.3f} s per image; tokenizer PSNR "
          f"{t['psnr_base']:.2f} dB (base) / {t['psnr_final']:.2f} dB (final); settings {row['settings']}")  # fmt: skip
    for split in ("heldout", "paraphrase"):
        if "shape_by_size" in row.get(split, {}):
            sizes = ", ".join(f"{k} {100 * v:.1f}%" for k, v in row[split]["shape_by_size"].items())
            print(f"{split} shape by object size: {sizes}")
    for split in ("heldout", "heldout2"):
        for miss in row.get(split, {}).get("misses", []):
            print(f"- {split} miss: {miss['prompt']!r} read as {miss['read']}")


def edit(row: dict) -> None:
    print("| task | measure | value | seconds |")
    print("|---|---|---|---|")
    i, o = row["inpaint"], row["outpaint"]
    split = f" (colour {pct(i['color_read'])} / shape {pct(i['shape_read'])})" if "shape_read" in i else ""
    print(f"| inpaint | new object read right{split} | {pct(i['new_object_read'])} | {i['seconds_per_image']:.2f} |")
    print(f"| inpaint | pixels outside the mask identical | {pct(i['outside_identical'])} | |")
    print(f"| outpaint | background read in the new quarter | {pct(o['background_read_in_new_area'])} | "
          f"{o['seconds_per_image']:.2f} |")  # fmt: skip
    for key in ("edit_random", "edit_region"):
        e = row[key]
        split = ""
        if "shape_changes_read" in e:
            split = f" (colour / shape changes: {pct(e['color_changes_read'])} / {pct(e['shape_changes_read'])})"
        print(f"| {key} ({e['iterations']} it.) | changed attribute read{split} | "
              f"{pct(e['changed_attribute_read'])} | {e['seconds_per_edit']:.2f} |")  # fmt: skip
        print(f"| {key} | position and background kept | {pct(e['unchanged_attributes_kept'])} | |")
    if "img2img" in row:
        m = row["img2img"]
        print(f"| img2img (strength {m['strength']}) | changed attribute read | {pct(m['prompt_followed'])} | "
              f"{m['seconds_per_image']:.2f} |")  # fmt: skip
        print(f"| img2img | position and other attributes kept | {pct(m['rest_kept'])} | |")
        print(f"| img2img | one clean scene (each attribute the source's or the prompt's) | "
              f"{pct(m['one_clean_scene'])} | |")  # fmt: skip


def personalize(row: dict) -> None:
    s = row["summary"]
    print("| method | concept similarity | (at the prompt's cell) | text fidelity | train s | file bytes |")
    print("|---|---|---|---|---|---|")
    for key in ("perfusion-local", "perfusion-global", "trained-k", "textual-inversion", "custom-diffusion",
                "dreambooth"):  # fmt: skip
        v = s[key]
        at_prompt = f"{v['similarity_prompt_cell']:.3f}" if "similarity_prompt_cell" in v else "-"
        print(f"| {key} | {v['concept_similarity']:.3f} | {at_prompt} | {pct(v['text_fidelity'])} | "
              f"{v['train_seconds']:.1f} | {int(v['file_bytes']):,} |")  # fmt: skip
    print("\nbeta sweep (concept similarity (at the prompt's cell) / text fidelity):")
    for key in ("perfusion-local", "perfusion-global", "trained-k"):
        points = ", ".join(f"b={b}: {v['concept_similarity']:.3f} ({v.get('similarity_prompt_cell', float('nan')):.3f})"
                           f" / {pct(v['text_fidelity'])}" for b, v in s[key]["sweep"].items())  # fmt: skip
        print(f"- {key}: {points}")
    print(f"\ntwo concepts in one prompt: {row['two_concepts']}")
    print(f"same layout, fp16 bytes: {row['file_bytes_same_layout_fp16']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="outputs/eval")
    args = parser.parse_args()
    for name, fn in (("shapes", shapes), ("edit", edit), ("personalize", personalize)):
        row = last_row(Path(args.dir) / f"{name}.jsonl")
        if row is not None:
            print(f"\n## {name} ({row.get('model')}, {row.get('date')})\n")
            fn(row)


if __name__ == "__main__":
    main()
