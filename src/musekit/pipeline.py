"""MusePipeline: wires the text encoder, tokenizers and transformers; load/save; text-to-image in two stages."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from musekit.config import (
    PipelineConfig,
    SchedulerConfig,
    SuperResConfig,
    TextEncoderConfig,
    TransformerConfig,
    VQConfig,
)
from musekit.io.checkpoint import atomic_write_text, load_component, save_component
from musekit.io.images import tensor_to_numpy, tensor_to_pil
from musekit.models.superres import SuperResTransformer
from musekit.models.transformer import MaskedTransformer
from musekit.sampling.guidance import GUIDANCE_SCHEDULES
from musekit.sampling.sampler import decode_tokens
from musekit.text import TextEmbeddings, TextEncoder, build_text_encoder, load_text_encoder, save_text_encoder
from musekit.tokenizer.vqgan import VQModel

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default"
MODEL_INDEX = "model_index.json"
OUTPUT_TYPES = ("pil", "np", "pt", "ids")
FORMAT_VERSION = 1


@dataclass
class ImageOutput:
    """What a pipeline call returns.

    Attributes:
        images: list of PIL images ("pil"), (B, H, W, 3) float numpy in [0, 1] ("np"), (B, 3, H, W) float tensor in
            [0, 1] ("pt"), or None ("ids").
        ids: (B, h, w) int64 tokens of the final stage (super-resolution when present).
        base_ids: (B, h', w') int64 tokens of the base stage.
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor | None
    ids: torch.Tensor
    base_ids: torch.Tensor | None = None


class MusePipeline:
    """Muse text-to-image: text encoder -> base transformer -> super-resolution transformer -> VQ decoder.

    Example:
        >>> pipe = MusePipeline.from_pretrained()  # the bundled default model
        >>> image = pipe("a large red circle in the center on a blue background",
        ...              generator=torch.Generator().manual_seed(0)).images[0]
    """

    def __init__(
        self,
        text_encoder: TextEncoder,
        vqgan: VQModel,
        transformer: MaskedTransformer,
        superres: SuperResTransformer | None = None,
        vqgan_sr: VQModel | None = None,
        scheduler_config: SchedulerConfig | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.vqgan = vqgan
        self.transformer = transformer
        self.superres = superres
        self.vqgan_sr = vqgan_sr
        self.scheduler_config = scheduler_config or SchedulerConfig()
        self.config = config or PipelineConfig()
        self.progress_bar = True
        self._check_compatible()
        for module in self.modules().values():
            module.eval().requires_grad_(False)

    # --- structure -------------------------------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        named = {"text_encoder": self.text_encoder, "vqgan": self.vqgan, "transformer": self.transformer}
        if self.superres is not None:
            named["superres"] = self.superres
        if self.vqgan_sr is not None:
            named["vqgan_sr"] = self.vqgan_sr
        return named

    @property
    def sr_tokenizer(self) -> VQModel:
        """The tokenizer of the super-resolution stage (the base tokenizer unless a second one is given)."""
        return self.vqgan_sr if self.vqgan_sr is not None else self.vqgan

    def _check_compatible(self) -> None:
        t, v = self.transformer.config, self.vqgan.config
        if t.codebook_size != v.codebook_size:
            raise ValueError(f"transformer codebook {t.codebook_size} != tokenizer codebook {v.codebook_size}")
        if t.text_dim != self.text_encoder.hidden_size:
            raise ValueError(f"transformer text_dim {t.text_dim} != text encoder width {self.text_encoder.hidden_size}")
        if self.superres is not None:
            s = self.superres.config
            if (s.cond_grid_size, s.cond_codebook_size) != (t.grid_size, t.codebook_size):
                raise ValueError("super-resolution model is not conditioned on this base model's token grid/codebook")
            if s.codebook_size != self.sr_tokenizer.config.codebook_size:
                raise ValueError("super-resolution codebook does not match its tokenizer")
            if s.text_dim != self.text_encoder.hidden_size:
                raise ValueError("super-resolution text_dim does not match the text encoder")
        elif self.vqgan_sr is not None:
            raise ValueError("vqgan_sr given without a super-resolution transformer")

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: torch.device | str) -> MusePipeline:
        for module in self.modules().values():
            module.to(device)
        return self

    @property
    def base_image_size(self) -> int:
        return self.transformer.config.grid_size * self.vqgan.downsample_factor

    @property
    def image_size(self) -> int:
        """Side of the final images in pixels."""
        if self.superres is None:
            return self.base_image_size
        return self.superres.config.grid_size * self.sr_tokenizer.downsample_factor

    def num_parameters(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.modules().items()}

    # --- construction, load, save ----------------------------------------------------------------------------
    @classmethod
    def from_configs(
        cls,
        text_encoder: TextEncoder | TextEncoderConfig | None = None,
        vqgan: VQConfig | str = "tiny",
        transformer: TransformerConfig | str = "tiny",
        superres: SuperResConfig | str | None = "tiny",
        scheduler_config: SchedulerConfig | None = None,
        config: PipelineConfig | None = None,
        seed: int = 0,
    ) -> MusePipeline:
        """A randomly initialised pipeline from configs or preset names (for tests, demos, and training).

        ``text_dim`` of the transformers is set to the text encoder's width; initialisation is seeded and leaves
        the global random state untouched.
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
        return cls(text_encoder, vq, base, sr, None, scheduler_config, config)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: torch.device | str = "cpu") -> MusePipeline:
        """Load a pipeline folder written by ``save_pretrained``; ``None`` loads the bundled default model."""
        folder = Path(path) if path is not None else DEFAULT_MODEL_DIR
        index_file = folder / MODEL_INDEX
        if not index_file.is_file():
            if path is None:
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
        text_encoder = load_text_encoder(folder / components["text_encoder"])
        vqgan = load_component(VQModel, VQConfig, folder / components["vqgan"])
        transformer = load_component(MaskedTransformer, TransformerConfig, folder / components["transformer"])
        superres = vqgan_sr = None
        if components.get("superres"):
            superres = load_component(SuperResTransformer, SuperResConfig, folder / components["superres"])
        if components.get("vqgan_sr"):
            vqgan_sr = load_component(VQModel, VQConfig, folder / components["vqgan_sr"])
        pipe = cls(
            text_encoder,
            vqgan,
            transformer,
            superres,
            vqgan_sr,
            SchedulerConfig.from_dict(index.get("scheduler", {})),
            PipelineConfig.from_dict(index.get("pipeline", {})),
        )
        return pipe.to(device)

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write every component as ``config.json`` + ``model.safetensors`` and a ``model_index.json``.

        Args:
            dtype: optional storage dtype for weights (e.g. ``torch.float16`` for shipped models); loading casts back.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        components: dict[str, str | None] = {"text_encoder": "text_encoder", "superres": None, "vqgan_sr": None}
        save_text_encoder(self.text_encoder, folder / "text_encoder")
        for name, module in self.modules().items():
            if name == "text_encoder":
                continue
            save_component(module, module.config, folder / name, dtype=dtype)
            components[name] = name
        index = {
            "format": "musekit",
            "format_version": FORMAT_VERSION,
            "components": components,
            "scheduler": self.scheduler_config.to_dict(),
            "pipeline": self.config.to_dict(),
        }
        atomic_write_text(folder / MODEL_INDEX, json.dumps(index, indent=2) + "\n")
        return folder

    # --- text ------------------------------------------------------------------------------------------------
    def encode_prompt(
        self,
        prompts: list[str],
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        guided: bool = True,
    ) -> TextEmbeddings:
        """Encode prompts for B = len(prompts) * num_images_per_prompt images.

        Returns [unconditional-or-negative (B) ; conditional (B)] when ``guided``, else the conditional batch.
        """
        cond = self.text_encoder.encode(prompts).repeat_interleave(num_images_per_prompt)
        if not guided:
            return cond
        if negative_prompt is None:
            uncond = self.text_encoder.empty(len(cond))
        else:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
            uncond = self.text_encoder.encode(negatives).repeat_interleave(num_images_per_prompt)
        return TextEmbeddings.cat([uncond, cond])

    # --- generation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        sr_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        temperature: float | tuple[float, float] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        sr_guidance_scale: float | None = None,
        top_k: int | None = None,
    ) -> ImageOutput | tuple:
        """Generate images from text.

        Args:
            prompt: a prompt or a list of prompts.
            negative_prompt: replaces the unconditional branch of guidance (one per prompt, or one for all).
            num_inference_steps: base-stage decoding steps (default from the pipeline config).
            sr_inference_steps: super-resolution decoding steps.
            guidance_scale: s in u + s (c - u); 1 disables guidance (and skips the unconditional pass).
            guidance_schedule: "constant" or "linear" (Muse's ramp from no guidance to ``guidance_scale``).
            temperature: Gumbel choice temperature, (start, end) or a start annealed to 0.
            num_images_per_prompt: images per prompt.
            generator: the random source; the same seed gives the same ids.
            output_type: "pil", "np", "pt" or "ids" (tokens only, no decoding).
            sr_guidance_scale: guidance of the super-resolution stage.
            top_k: sample token values only among the k most likely codes.

        Returns:
            ``ImageOutput(images, ids, base_ids)``, or the tuple ``(images, ids)`` when ``return_dict`` is False.
        """
        prompts = self._check_prompts(prompt)
        cfg = self.config
        steps = num_inference_steps if num_inference_steps is not None else cfg.num_inference_steps
        sr_steps = sr_inference_steps if sr_inference_steps is not None else cfg.sr_inference_steps
        scale = guidance_scale if guidance_scale is not None else cfg.guidance_scale
        sr_scale = sr_guidance_scale if sr_guidance_scale is not None else cfg.sr_guidance_scale
        schedule = guidance_schedule or cfg.guidance_schedule
        self._check_options(steps, sr_steps, scale, schedule, num_images_per_prompt, output_type)
        if negative_prompt is not None and scale == 1.0:
            logger.warning("negative_prompt has no effect with guidance_scale=1")

        batch = len(prompts) * num_images_per_prompt
        text = self.encode_prompt(prompts, negative_prompt, num_images_per_prompt, guided=True)
        base_ids = self.generate_tokens(
            self.transformer, text, batch, steps, scale, schedule, temperature, top_k, generator, None, "base"
        )
        ids = base_ids
        if self.superres is not None:
            ids = self.generate_tokens(
                self.superres, text, batch, sr_steps, sr_scale, schedule, temperature, top_k, generator, base_ids, "sr"
            )
        images = None if output_type == "ids" else self.decode(ids, output_type)
        if not return_dict:
            return images, ids
        return ImageOutput(images, ids, base_ids)

    def generate_tokens(
        self,
        model: MaskedTransformer,
        text: TextEmbeddings,
        batch: int,
        steps: int,
        scale: float,
        schedule: str,
        temperature: float | tuple[float, float] | None,
        top_k: int | None,
        generator: torch.Generator | None,
        cond_ids: torch.Tensor | None = None,
        stage: str = "base",
        start_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode one stage. ``text`` is [uncond ; cond] (2B); guidance 1 uses the conditional half only.

        ``start_ids`` (B, h, w) with [MASK] where tokens are unknown; all-[MASK] when None.
        """
        grid = model.config.grid_size
        device = self.device
        if start_ids is None:
            start_ids = torch.full((batch, grid, grid), model.config.mask_token_id, dtype=torch.long, device=device)
        guided = scale != 1.0
        if not guided:
            text = TextEmbeddings(*(t[batch:] for t in (text.hidden_states, text.pooled, text.attention_mask)))
        text = text.to(device)
        if cond_ids is not None and guided:
            cond_ids = torch.cat([cond_ids, cond_ids])
        cache = model.precompute(text, cond_ids)  # text keys/values once per call
        return decode_tokens(
            model,
            cache,
            start_ids.to(device),
            steps,
            self.scheduler_config,
            guidance_scale=scale,
            guidance_schedule=schedule,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            progress=self.progress_bar,
            description=stage,
        )

    def decode(self, ids: torch.Tensor, output_type: str = "pt") -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Tokens (B, h, w) of the final stage -> images in the requested ``output_type``."""
        tokenizer = self.sr_tokenizer if self.superres is not None else self.vqgan
        images = tokenizer.decode(ids)
        if output_type == "pt":
            return images
        if output_type == "np":
            return tensor_to_numpy(images)
        return tensor_to_pil(images)

    @staticmethod
    def _check_prompts(prompt: str | list[str]) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list | tuple) or not prompts:
            raise TypeError("prompt must be a non-empty string or a non-empty list of strings")
        for item in prompts:
            if not isinstance(item, str) or not item.strip():
                raise ValueError(
                    "prompt is empty: describe the image you want, e.g. 'a red circle on a blue background'"
                )
        return list(prompts)

    @staticmethod
    def _check_options(steps, sr_steps, scale, schedule, num_images, output_type) -> None:
        if steps < 1 or sr_steps < 1:
            raise ValueError(f"inference steps must be >= 1 (got {steps} and {sr_steps})")
        if scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {scale}")
        if schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}")
        if num_images < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
