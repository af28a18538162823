"""Write a run's EMA weights (latest checkpoint) as fp16 safetensors parts of at most ~15 MB each, plus the model
config, so they fit a size-limited transfer; ``join`` rebuilds a component folder (``config.json`` +
``model.safetensors``).

    python scripts/export_split.py split runs/base-gpu OUT_DIR
    python scripts/export_split.py join PARTS_DIR runs/base-gpu/final
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from musekit.config import TransformerConfig
from musekit.training.checkpoint import latest_checkpoint
from musekit.training.config import TrainConfig

LIMIT = 15_000_000  # bytes per part


def split(run_dir: Path, out: Path) -> None:
    config = TrainConfig.load(run_dir / "config.json")
    checkpoint = latest_checkpoint(run_dir)
    state = load_file(str(checkpoint / "ema.safetensors"))
    model = TransformerConfig.preset(config.model_preset).replace(text_dim=384, codebook_size=256, grid_size=16)
    model.save(out / "config.json")
    parts, current, size = [], {}, 0
    for name, value in state.items():
        value = value.half() if value.is_floating_point() else value
        if current and size + value.numel() * value.element_size() > LIMIT:
            parts.append(current)
            current, size = {}, 0
        current[name] = value.contiguous()
        size += value.numel() * value.element_size()
    parts.append(current)
    for i, part in enumerate(parts):
        save_file(part, str(out / f"part{i}.safetensors"))
    step = json.loads((checkpoint / "state.json").read_text())["step"]
    print(f"{checkpoint} (step {step}): {len(state)} tensors in {len(parts)} parts")


def join(parts_dir: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for part in sorted(parts_dir.glob("part*.safetensors")):
        state.update({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(part)).items()})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy2(parts_dir / "config.json", folder / "config.json")
    print(f"{folder}: {len(state)} tensors")


if __name__ == "__main__":
    command, src, dst = sys.argv[1:4]
    (split if command == "split" else join)(Path(src), Path(dst))
