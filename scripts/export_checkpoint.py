"""Write a run's latest checkpoint (its EMA weights when it keeps them) as a component folder, to use a run stopped
before its last step (a session's time ran out) like a finished one's ``final/``.

Usage: python scripts/export_checkpoint.py RUN_DIR LIKE_DIR OUT_DIR [--raw]
LIKE_DIR is a component folder of the same architecture (e.g. the ``init_from`` the run started from): its
config.json is copied. The result is loaded back strictly before the script reports success.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

from musekit.io.checkpoint import CONFIG_NAME, WEIGHTS_NAME, atomic_save_tensors, load_state_strict
from musekit.training.checkpoint import latest_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run")
    parser.add_argument("like")
    parser.add_argument("out")
    parser.add_argument("--raw", action="store_true", help="the trained weights, not the EMA ones")
    args = parser.parse_args()
    checkpoint = latest_checkpoint(args.run)
    if checkpoint is None:
        raise SystemExit(f"no checkpoint in {args.run}")
    source = checkpoint / ("model.safetensors" if args.raw or not (checkpoint / "ema.safetensors").is_file()
                           else "ema.safetensors")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.like) / CONFIG_NAME, out / CONFIG_NAME)
    atomic_save_tensors(load_file(str(source)), out / WEIGHTS_NAME, metadata={"format": "pt"})
    config = json.loads((out / CONFIG_NAME).read_text())
    from musekit.config import SuperResConfig, TransformerConfig
    from musekit.models import MaskedTransformer, SuperResTransformer

    is_sr = "cond_grid_size" in config
    module = SuperResTransformer(SuperResConfig.load(out / CONFIG_NAME)) if is_sr else MaskedTransformer(
        TransformerConfig.load(out / CONFIG_NAME))  # fmt: skip
    load_state_strict(module, out / WEIGHTS_NAME)
    step = json.loads((checkpoint / "state.json").read_text())["step"]
    print(f"wrote {out} from {source} (step {step})")


if __name__ == "__main__":
    main()
