"""Load diffusers-layout aMUSEd folders (``amused/amused-256``, ``amused-512``) into musekit modules.

Folder layout: ``transformer/`` (UVit2DModel), ``vqvae/`` (VQModel), ``text_encoder/`` (CLIPTextModelWithProjection),
``tokenizer/``, ``scheduler/``. Weights are read from ``diffusion_pytorch_model.safetensors``; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from musekit.config import PipelineConfig, SchedulerConfig, TextEncoderConfig, UVitConfig
from musekit.io.checkpoint import read_weights
from musekit.models.uvit import UVitTransformer, from_diffusers_state_dict
from musekit.text import build_text_encoder
from musekit.tokenizer.amused_vq import AmusedVQConfig, AmusedVQModel

WEIGHTS = "diffusion_pytorch_model.safetensors"


def is_amused_folder(folder: Path) -> bool:
    config = folder / "transformer" / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("_class_name") == "UVit2DModel"


def _config(cls, path: Path, drop: dict[str, object]):
    raw = json.loads(path.read_text())
    for key, expected in drop.items():
        if key in raw and expected is not None and raw[key] != expected and raw[key] != list(expected or []):
            raise ValueError(f"{path}: unsupported {key}={raw[key]!r} (musekit supports {expected!r})")
    fields = set(cls.__dataclass_fields__)
    return cls.from_dict({k: v for k, v in raw.items() if k in fields})


def _weights(module, folder: Path, convert=lambda s: s) -> None:
    path = folder / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    state = convert(read_weights(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:6]}, unexpected keys {unexpected[:6]}")
    module.eval()


def load_amused(folder: str | Path, scheduler: str = "maskgit") -> tuple:
    """(components, scheduler config, pipeline config) for ``MusePipeline`` from a diffusers aMUSEd folder."""
    folder = Path(folder)
    transformer = UVitTransformer(_config(UVitConfig, folder / "transformer" / "config.json", {}))
    _weights(transformer, folder / "transformer", from_diffusers_state_dict)
    vq_checks = {"mid_block_add_attention": False, "lookup_from_codebook": True, "norm_type": "group", "act_fn": "silu"}
    vq = AmusedVQModel(_config(AmusedVQConfig, folder / "vqvae" / "config.json", vq_checks))
    _weights(vq, folder / "vqvae")
    text = build_text_encoder(TextEncoderConfig(kind="clip", path=str(folder / "text_encoder"), max_length=77,
                                                mask_padding=False, hidden_layer=-2))  # fmt: skip
    schedule = "cosine"
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        schedule = json.loads(scheduler_file.read_text()).get("masking_schedule", "cosine")
    if scheduler not in ("maskgit", "amused"):
        raise ValueError(f"scheduler must be 'maskgit' or 'amused', got {scheduler!r}")
    scheduler_config = SchedulerConfig(kind=scheduler, mask_schedule=schedule, temperature=(2.0, 0.0))
    config = PipelineConfig(num_inference_steps=12, guidance_scale=10.0)  # AmusedPipeline's defaults
    return (text, vq, transformer, None, None), scheduler_config, config


def export_amused(pipe, folder: str | Path) -> Path:
    """Write a musekit pipeline whose transformer is a U-ViT as a diffusers-layout folder AmusedPipeline loads."""
    from safetensors.torch import save_file

    from musekit.io.checkpoint import atomic_write_text
    from musekit.models.uvit import to_diffusers_state_dict

    if not isinstance(pipe.transformer, UVitTransformer) or not isinstance(pipe.vqgan, AmusedVQModel):
        raise ValueError("only aMUSEd-architecture pipelines (U-ViT + aMUSEd VQ) export to the diffusers layout")
    folder = Path(folder)
    version = {"_diffusers_version": "0.33.1"}
    (folder / "transformer").mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in to_diffusers_state_dict(pipe.transformer.state_dict()).items()}
    save_file(state, str(folder / "transformer" / WEIGHTS))
    transformer_config = {"_class_name": "UVit2DModel", **version, **pipe.transformer.config.to_dict()}
    atomic_write_text(folder / "transformer" / "config.json", json.dumps(transformer_config))
    vq = pipe.vqgan.config
    n = len(vq.block_out_channels)
    vq_config = {"_class_name": "VQModel", **version, "in_channels": vq.in_channels, "out_channels": vq.out_channels,
                 "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
                 "block_out_channels": list(vq.block_out_channels), "layers_per_block": vq.layers_per_block,
                 "act_fn": "silu", "latent_channels": vq.latent_channels, "sample_size": vq.sample_size,
                 "num_vq_embeddings": vq.num_vq_embeddings, "norm_num_groups": vq.norm_num_groups,
                 "vq_embed_dim": vq.vq_embed_dim, "scaling_factor": 0.18215, "norm_type": "group",
                 "mid_block_add_attention": False, "lookup_from_codebook": True, "force_upcast": False}  # fmt: skip
    (folder / "vqvae").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in pipe.vqgan.state_dict().items()}, str(folder / "vqvae" / WEIGHTS))
    atomic_write_text(folder / "vqvae" / "config.json", json.dumps(vq_config))
    pipe.text_encoder.model.save_pretrained(str(folder / "text_encoder"))
    pipe.text_encoder.tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / "scheduler").mkdir(exist_ok=True)
    atomic_write_text(folder / "scheduler" / "scheduler_config.json", json.dumps(
        {"_class_name": "AmusedScheduler", **version, "mask_token_id": pipe.transformer.config.mask_token_id,
         "masking_schedule": pipe.scheduler_config.mask_schedule}))  # fmt: skip
    index = {"_class_name": "AmusedPipeline", **version, "scheduler": ["diffusers", "AmusedScheduler"],
             "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "transformer": ["diffusers", "UVit2DModel"],
             "vqvae": ["diffusers", "VQModel"]}  # fmt: skip
    atomic_write_text(folder / "model_index.json", json.dumps(index))
    return folder
