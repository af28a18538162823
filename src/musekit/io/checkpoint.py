"""Atomic, strict save/load of components as ``config.json`` + ``model.safetensors`` folders.

Nothing here uses pickle. Every file is written to a temporary sibling and renamed into place, so a crash never
leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from musekit.config import BaseConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_replace(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary sibling of ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_replace(Path(path), write)


def atomic_save_tensors(
    tensors: dict[str, torch.Tensor],
    path: Path,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Save tensors to a safetensors file atomically (optionally cast floating tensors to ``dtype``)."""
    prepared = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        prepared[name] = tensor.contiguous()
    atomic_replace(Path(path), lambda tmp: save_file(prepared, tmp, metadata=metadata))


def save_component(module: torch.nn.Module, config: BaseConfig, folder: str | Path, dtype: torch.dtype | None = None):
    """Save ``module``'s state dict and ``config`` into ``folder``.

    Args:
        module: the component.
        config: its frozen config; written as ``config.json``.
        folder: destination folder (created if needed).
        dtype: optional storage dtype for floating tensors (e.g. ``torch.float16`` for shipped weights).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in module.state_dict().items()}
    atomic_save_tensors(state, folder / WEIGHTS_NAME, metadata={"format": "pt"}, dtype=dtype)
    config.save(folder / CONFIG_NAME)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, damaged or partial file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"cannot read {path} (a damaged or partial file?): {err}") from None


def load_state_strict(module: torch.nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``module``; any missing, unexpected or mis-shaped key is an error."""
    path = Path(path)
    state = read_weights(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
        state[name] = tensor.to(expected[name].dtype)
    module.load_state_dict(state, strict=True)


def load_state_matching(module: torch.nn.Module, path: str | Path) -> list[str]:
    """Load the tensors of ``path`` whose names and shapes match ``module`` (e.g. a transformer body for a new
    codebook); returns the names of ``module``'s tensors left as they were. No matching tensor at all is an error."""
    path = Path(path)
    state = read_weights(path)
    expected = module.state_dict()
    matching = {k: v.to(expected[k].dtype) for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    if not matching:
        raise ValueError(f"{path}: no tensor matches this model by name and shape")
    module.load_state_dict(matching, strict=False)
    return sorted(set(expected) - set(matching))


def load_component(cls, config_cls, folder: str | Path):
    """Build ``cls(config)`` from ``folder/config.json`` and load ``folder/model.safetensors`` strictly."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"component folder not found: {folder}")
    config = config_cls.load(folder / CONFIG_NAME)
    module = cls(config)
    load_state_strict(module, folder / WEIGHTS_NAME)
    module.eval()
    return module
