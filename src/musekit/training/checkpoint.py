"""Resumable training checkpoints: model, optimizer, EMA, step; written atomically, pickle-free.

Layout of a run folder::

    run/config.json            the resolved training config
    run/ckpt-000500/           model.safetensors, optimizer.safetensors, optimizer.json, ema.safetensors, state.json
    run/latest.json            {"checkpoint": "ckpt-000500", "step": 500}  (atomically replaced last)

A checkpoint folder is complete before ``latest.json`` points at it, so a kill at any moment leaves the previous
checkpoint usable. Older checkpoint folders are deleted after the pointer moves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from musekit.io.checkpoint import atomic_save_tensors, atomic_write_text

LATEST = "latest.json"


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 1,
) -> Path:
    """Write ``ckpt-{step}`` completely, then point ``latest.json`` at it, then prune old checkpoints."""
    run_dir = Path(run_dir)
    folder = run_dir / f"ckpt-{step:07d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_save_tensors(model.state_dict(), folder / "model.safetensors")
    tensors, meta = _optimizer_to_files(optimizer)
    atomic_save_tensors(tensors, folder / "optimizer.safetensors")
    atomic_write_text(folder / "optimizer.json", json.dumps(meta))
    if ema_state is not None:
        atomic_save_tensors(ema_state, folder / "ema.safetensors")
    atomic_write_text(folder / "state.json", json.dumps({"step": step, **(extra or {})}))
    atomic_write_text(run_dir / LATEST, json.dumps({"checkpoint": folder.name, "step": step}))
    checkpoints = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir())
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    folder = Path(run_dir) / json.loads(pointer.read_text())["checkpoint"]
    return folder if folder.is_dir() else None


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore model (and optimizer) in place; returns (state.json contents, EMA state or None)."""
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    if optimizer is not None:
        meta = json.loads((folder / "optimizer.json").read_text())
        optimizer.load_state_dict(_optimizer_from_files(load_file(str(folder / "optimizer.safetensors")), meta))
    ema_file = folder / "ema.safetensors"
    ema = load_file(str(ema_file)) if ema_file.is_file() else None
    return json.loads((folder / "state.json").read_text()), ema
