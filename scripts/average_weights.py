"""Average transformer weights of runs that share an initialisation (a "model soup", Wortsman et al. 2022) into a
component folder: ``config.json`` from the first, ``model.safetensors`` the weighted mean (fp32).

    python scripts/average_weights.py OUT_DIR DIR[:WEIGHT] DIR[:WEIGHT] ...
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def average(out: Path, sources: list[tuple[Path, float]]) -> None:
    total = sum(weight for _, weight in sources)
    mean: dict = {}
    for folder, weight in sources:
        if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
            raise SystemExit(f"{folder}: no model.safetensors and config.json there")
        state = load_file(str(folder / "model.safetensors"))
        if mean and (state.keys() != mean.keys() or any(v.shape != mean[k].shape for k, v in state.items())):
            raise SystemExit(f"{folder}: its tensors differ from {sources[0][0]}'s")
        for name, value in state.items():
            part = value.float() * (weight / total)
            mean[name] = mean[name] + part if name in mean else part
    if any(out.resolve() == folder.resolve() for folder, _ in sources):
        raise SystemExit(f"{out}: the output folder must not be one of the sources")
    out.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy2(sources[0][0] / "config.json", out / "config.json")
    print(f"{out}: mean of {', '.join(f'{f} x{w / total:.3f}' for f, w in sources)}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    parsed = []
    for arg in sys.argv[2:]:
        path, colon, weight = arg.rpartition(":")
        if not colon or Path(arg).exists():  # no weight given (a folder name may hold a colon)
            path, weight = arg, ""
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise SystemExit(f"{arg}: the weight after ':' must be a number") from None
        if not math.isfinite(value) or value <= 0:
            raise SystemExit(f"{arg}: the weight must be a positive number")
        parsed.append((Path(path), value))
    average(Path(sys.argv[1]), parsed)
