"""Building, loading and saving MusePipeline folders (``model_index.json`` + one folder per component)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from musekit.config import (
    PipelineConfig,
    SchedulerConfig,
    SuperResConfig,
    TextEncoderConfig,
    TransformerConfig,
    VQConfig,
)
from musekit.io.checkpoint import atomic_write_text, load_component, save_component
from musekit.models.superres import SuperResTransformer
from musekit.models.transformer import MaskedTransformer
from musekit.text import TextEncoder, build_text_encoder, load_text_encoder, save_text_encoder
from musekit.tokenizer.vqgan import VQModel

MODEL_INDEX = "model_index.json"
FORMAT_VERSION = 1


def _class_table() -> dict[str, tuple]:
    from musekit.config import UVitConfig
    from musekit.models.uvit import UVitTransformer
    from musekit.tokenizer.amused_vq import AmusedVQConfig, AmusedVQModel

    return {
        "VQModel": (VQModel, VQConfig),
        "AmusedVQModel": (AmusedVQModel, AmusedVQConfig),
        "MaskedTransformer": (MaskedTransformer, TransformerConfig),
        "SuperResTransformer": (SuperResTransformer, SuperResConfig),
        "UVitTransformer": (UVitTransformer, UVitConfig),
    }


class _LazyClasses(dict):
    def __missing__(self, key):
        table = _class_table()
        if key not in table:
            raise ValueError(f"unknown component class {key!r} in model_index.json")
        return table[key]


_CLASSES = _LazyClasses()


def build_components(text_encoder, vqgan, transformer, superres, seed: int) -> tuple:
    """Random components from configs or preset names; ``text_dim`` follows the text encoder's width.

    Initialisation is seeded and leaves the global random state untouched.
    """
    if text_encoder is None or isinstance(text_encoder, TextEncoderConfig):
        text_encoder = build_text_encoder(text_encoder or TextEncoderConfig())
    vq_cfg = VQConfig.preset(vqgan) if isinstance(vqgan, str) else vqgan
    t_cfg = TransformerConfig.preset(transformer) if isinstance(transformer, str) else transformer
    t_cfg = t_cfg.replace(text_dim=text_encoder.hidden_size, codebook_size=vq_cfg.codebook_size)
    s_cfg = SuperResConfig.preset(superres) if isinstance(superres, str) else superres
    if s_cfg is not None:
        s_cfg = s_cfg.replace(
            text_dim=text_encoder.hidden_size,
            codebook_size=vq_cfg.codebook_size,
            cond_codebook_size=vq_cfg.codebook_size,
            cond_grid_size=t_cfg.grid_size,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vq = VQModel(vq_cfg)
        base = MaskedTransformer(t_cfg)
        sr = SuperResTransformer(s_cfg) if s_cfg is not None else None
    return text_encoder, vq, base, sr


def load_pipeline_parts(folder: Path, bundled: bool = False) -> tuple[tuple, SchedulerConfig, PipelineConfig]:
    """Read a folder written by ``save_pipeline``: (components, scheduler config, pipeline config)."""
    index_file = folder / MODEL_INDEX
    if not index_file.is_file():
        if bundled:
            raise FileNotFoundError(
                "no bundled default model in this installation (src/musekit/assets/default); pass a model folder"
            )
        if not folder.exists():
            raise FileNotFoundError(f"model folder not found: {folder}")
        raise FileNotFoundError(f"{folder} is not a musekit model folder ({MODEL_INDEX} missing)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{index_file} is not valid JSON: {err}") from None
    if index.get("format") != "musekit":
        raise ValueError(f"{index_file} is not a musekit model index")
    components: dict[str, Any] = index["components"]
    classes = index.get("classes", {})
    text_encoder: TextEncoder = load_text_encoder(folder / components["text_encoder"])
    vqgan = load_component(*_CLASSES[classes.get("vqgan", "VQModel")], folder / components["vqgan"])
    transformer = load_component(*_CLASSES[classes.get("transformer", "MaskedTransformer")],
                                 folder / components["transformer"])  # fmt: skip
    superres = vqgan_sr = None
    if components.get("superres"):
        superres = load_component(SuperResTransformer, SuperResConfig, folder / components["superres"])
    if components.get("vqgan_sr"):
        vqgan_sr = load_component(VQModel, VQConfig, folder / components["vqgan_sr"])
    scheduler = SchedulerConfig.from_dict(index.get("scheduler", {}))
    config = PipelineConfig.from_dict(index.get("pipeline", {}))
    return (text_encoder, vqgan, transformer, superres, vqgan_sr), scheduler, config


def model_world(folder: Path) -> str | None:
    """The ``world`` a model folder's index names ("shapes": trained on musekit's shapes world), or None."""
    try:
        return json.loads((folder / MODEL_INDEX).read_text()).get("world")
    except (OSError, json.JSONDecodeError):
        return None


def save_pipeline(pipe, folder: Path, dtype: torch.dtype | None = None) -> Path:
    """Write every component as ``config.json`` + ``model.safetensors``, the index, and Perfusion's C if known."""
    folder.mkdir(parents=True, exist_ok=True)
    components: dict[str, str | None] = {"text_encoder": "text_encoder", "superres": None, "vqgan_sr": None}
    save_text_encoder(pipe.text_encoder, folder / "text_encoder")
    for name, module in pipe.modules().items():
        if name == "text_encoder":
            continue
        save_component(module, module.config, folder / name, dtype=dtype)
        components[name] = name
    index = {
        "format": "musekit",
        "format_version": FORMAT_VERSION,
        "components": components,
        "classes": {name: type(module).__name__ for name, module in pipe.modules().items() if name != "text_encoder"},
        "scheduler": pipe.scheduler_config.to_dict(),
        "pipeline": pipe.config.to_dict(),
    }
    if pipe.world:
        index["world"] = pipe.world
    atomic_write_text(folder / MODEL_INDEX, json.dumps(index, indent=2) + "\n")
    if pipe._c_inv is not None:
        from musekit.personalize.covariance import save_covariances

        save_covariances(pipe._covariances, folder)
    return folder
