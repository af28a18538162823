"""MusePipeline: wires the text encoder, tokenizers and transformers; load/save; text-to-image in two stages."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

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
from musekit.editing.methods import EditingMethods
from musekit.io.images import tensor_to_numpy, tensor_to_pil
from musekit.io.pipeline_io import MODEL_INDEX  # noqa: F401  (re-exported for the CLI)
from musekit.models.superres import SuperResTransformer
from musekit.models.transformer import MaskedTransformer
from musekit.personalize.methods import PersonalizationMethods
from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE
from musekit.sampling.options import SamplingOptions
from musekit.sampling.stages import StageMethods
from musekit.text import TextEmbeddings, TextEncoder
from musekit.tokenizer.vqgan import VQModel

logger = logging.getLogger(__name__)

CONCEPT_TOKEN = re.compile(r"<[a-z0-9][a-z0-9_-]*>")  # as musekit.personalize.tokens.TOKEN_PATTERN, within a prompt

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default"


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same one ("cuda" meaning the current CUDA device)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


@dataclass
class ImageOutput:
    """What a pipeline call returns.

    Attributes:
        images: list of PIL images ("pil"), (B, H, W, 3) float numpy in [0, 1] ("np"), (B, 3, H, W) float tensor in
            [0, 1] ("pt"), or None ("ids").
        ids: (B, h, w) int64 tokens of the final stage (super-resolution when present).
        base_ids: (B, h', w') int64 tokens of the base stage.
        intermediates: for ``edit(..., return_intermediates=True)``, the images after each quarter of the
            iterations (users may prefer an earlier one).
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor | None
    ids: torch.Tensor
    base_ids: torch.Tensor | None = None
    intermediates: list | None = None


class MusePipeline(StageMethods, EditingMethods, PersonalizationMethods):
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
        self.source_folder: Path | None = None  # where from_pretrained loaded it (Perfusion's C lives there)
        self.world: str | None = None  # "shapes" for a model trained on musekit's shapes world (model_index.json)
        self._c_inv: dict[str, torch.Tensor] | None = None
        self._concept_call = None  # set only inside a call that uses concepts
        self._full_precision: dict[str, torch.nn.Module] = {}  # the fp32 transformers while quantized
        self._quantization = ""  # the quantize() kind while quantized
        self._check_compatible()
        if hasattr(transformer, "image_size"):  # aMUSEd micro-conditioning defaults to the image size
            transformer.image_size = transformer.config.grid_size * vqgan.downsample_factor
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

    @property
    def sr_conditions_on_base_ids(self) -> bool:
        """True when the super-resolution transformer reads the base ids as they are (Muse); False when it was
        trained on base images tokenized by its own tokenizer (a base stage with a tokenizer of its own), see
        ``sr_cond_ids``."""
        return self.superres is None or self.superres.config.cond_codebook_size == self.transformer.config.codebook_size

    @torch.no_grad()
    def sr_cond_ids(self, base_ids: torch.Tensor) -> torch.Tensor:
        """The conditioning tokens of the super-resolution stage for ``base_ids``: the ids themselves, or, when the
        base stage has a tokenizer of its own, the base image decoded and re-tokenized by the super-resolution
        tokenizer at the base resolution (what that stage was trained on)."""
        if self.sr_conditions_on_base_ids:
            return base_ids
        return self.sr_tokenizer.encode(self.vqgan.decode(base_ids).clamp(0.0, 1.0))

    def _check_compatible(self) -> None:
        t, v = self.transformer.config, self.vqgan.config
        if t.codebook_size != v.codebook_size:
            raise ValueError(f"transformer codebook {t.codebook_size} != tokenizer codebook {v.codebook_size}")
        if self.text_encoder.hidden_size != t.text_dim:
            raise ValueError(f"transformer text_dim {t.text_dim} != text encoder width {self.text_encoder.hidden_size}")
        if self.superres is not None:
            s = self.superres.config
            if s.cond_grid_size != t.grid_size:
                raise ValueError("super-resolution model is not conditioned on this base model's token grid")
            if s.cond_codebook_size != t.codebook_size and (
                self.vqgan_sr is None or s.cond_codebook_size != self.vqgan_sr.config.codebook_size
            ):
                raise ValueError(
                    "super-resolution model is conditioned on neither the base model's codebook nor its own tokenizer's"
                )
            if s.codebook_size != self.sr_tokenizer.config.codebook_size:
                raise ValueError("super-resolution codebook does not match its tokenizer")
            if s.text_dim != self.text_encoder.hidden_size:
                raise ValueError("super-resolution text_dim does not match the text encoder")
        elif self.vqgan_sr is not None:
            raise ValueError("vqgan_sr given without a super-resolution transformer")

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def precision(self) -> str:
        """ "fp32" (or the dtype the weights were cast to), or the ``quantize`` kind ("int8", "bf16-linears", ...)."""
        if self._full_precision:
            return self._quantization
        return str(next(self.transformer.parameters()).dtype).replace("torch.float", "fp")

    def quantize(self, kind: str = "int8", compile: bool = False) -> MusePipeline:
        """Swap the base and super-resolution transformers for faster reduced-precision copies, in place.

        ``"int8"``: int8 feed-forward linears on CPU (per-channel weights, per-token activations, int32 accumulation).
        ``"int8-all"``: every per-step linear, faster but further from fp32. ``"bf16-linears"`` (CPU): bf16 products
        (fp32 accumulation) in every per-step linear but the few whose rounding moves the logits most, which stay
        fp32 with everything between the linears. ``"fp16"``, ``"bf16"``: on CUDA, the
        per-step forward in half precision replayed as a CUDA graph (``musekit.models.half``; ``compile=True`` adds
        torch.compile); ``"bf16"`` also on a CPU, eagerly. With the int8 and bf16-linears kinds ``compile=True``
        compiles each transformer block (``musekit.models.compiled``: the elementwise work between the products
        fused; needs a C++ compiler, and the first call per input shape compiles). With the aMUSEd scheduler a
        quantized pipeline can also draw tokens faster, since it cannot give diffusers' ids anyway:
        ``pipe.scheduler_config = pipe.scheduler_config.replace(draws="inverse-cdf")``. Which path is faster than
        fp32 depends on the CPU: each is timed once per process and a warning says when it is slower here
        (``musekit.models.quantize``). Only per-step work changes: text keys/values (and so Perfusion's edits) stay
        fp32. Fidelity against fp32 and speed are measured by ``musekit bench amused`` and
        ``benchmarks/int8_fidelity.py``. Learning concepts and saving need the full-precision pipeline.

        Example:
            >>> pipe = MusePipeline.from_pretrained().quantize("int8")
            >>> gpu = MusePipeline.from_pretrained(device="cuda").quantize("fp16")
        """
        from musekit.io.metadata import weights_fingerprint
        from musekit.models.quantize import quantize_pipeline

        weights_fingerprint(self)  # the settings records name the weights as loaded, not as quantized
        return quantize_pipeline(self, kind, compile)

    def _require_full_precision(self, what: str) -> None:
        if self._full_precision:
            raise ValueError(f"{what} needs the full-precision pipeline; load it again without quantize()")

    def to(self, device: torch.device | str) -> MusePipeline:
        if self._full_precision and not same_device(torch.device(device), self.device):
            where = f"CUDA ({self.device})" if self.device.type == "cuda" else "CPU"
            raise ValueError(f"this {self._quantization} pipeline was made for {where}; load it again to move it")
        for module in self.modules().values():
            module.to(device)
        return self

    @property
    def is_bundled(self) -> bool:
        """Whether this is the bundled shapes-world model (loaded from the package's own folder)."""
        folder = self.source_folder
        return folder is not None and Path(folder).resolve() == DEFAULT_MODEL_DIR.resolve()

    @property
    def is_shapes_world(self) -> bool:
        """Whether this model was trained on musekit's shapes world (the bundled one, a copy of it, or one that
        `musekit build-pipeline` assembled from musekit's recipes), so shapes-world prompt notes apply to it."""
        return self.world == "shapes" or self.is_bundled

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
        from musekit.io.pipeline_io import build_components

        return cls(*build_components(text_encoder, vqgan, transformer, superres, seed), None, scheduler_config, config)

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: torch.device | str = "cpu", scheduler: str | None = None
    ) -> MusePipeline:
        """Load a pipeline folder: musekit's (``save_pretrained``) or a diffusers aMUSEd folder.

        Args:
            path: the folder; ``None`` loads the bundled default model.
            scheduler: for aMUSEd folders, "maskgit" (musekit's, default) or "amused" (reproduces diffusers'
                AmusedScheduler token for token).
        """
        from musekit.io.convert_amused import is_amused_folder, load_amused
        from musekit.io.pipeline_io import load_pipeline_parts, model_world

        folder = Path(path) if path is not None else DEFAULT_MODEL_DIR
        world = None
        if is_amused_folder(folder):
            parts, scheduler_config, config = load_amused(folder, scheduler or "maskgit")
        else:
            parts, scheduler_config, config = load_pipeline_parts(folder, bundled=path is None)
            world = model_world(folder)
            if scheduler is not None:
                scheduler_config = scheduler_config.replace(kind=scheduler)
        pipe = cls(*parts, scheduler_config, config)
        pipe.source_folder = folder
        pipe.world = world
        return pipe.to(device)

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write every component as ``config.json`` + ``model.safetensors`` and a ``model_index.json``.

        Args:
            dtype: optional storage dtype for weights (e.g. ``torch.float16`` for shipped models); loading casts back.
        """
        from musekit.io.pipeline_io import save_pipeline

        self._require_full_precision("save_pretrained")
        return save_pipeline(self, Path(path), dtype)

    # --- text ------------------------------------------------------------------------------------------------
    def encode_prompt(
        self,
        prompts: list[str],
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
    ) -> TextEmbeddings:
        """Encode prompts for B = len(prompts) * num_images_per_prompt images.

        Returns [unconditional-or-negative (B) ; conditional (B)], the layout every stage takes.
        """
        defined = {c.token for c in self._concept_call.concepts} if self._concept_call is not None else set()
        undefined = sorted({t for p in prompts for t in CONCEPT_TOKEN.findall(p)} - defined)
        if undefined:
            logger.warning(
                "the prompt writes %s, but no concept of this call defines it: it is an unknown word here "
                "(pass concepts=[...]; on the command line, --concept FILE)",
                ", ".join(undefined),
            )
        if self._concept_call is not None:
            cond = self._concept_call.prompts.text.to(self.device)
        else:
            cond = self.text_encoder.encode(prompts).repeat_interleave(num_images_per_prompt)
        if negative_prompt is not None and guidance_scale == 1.0:
            logger.warning("negative_prompt has no effect with guidance_scale=1")
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
        concepts: list | None = None,
        concept_bias: float = DEFAULT_BIAS,
        concept_temperature: float = DEFAULT_TEMPERATURE,
        key_locking: str = "local",
        micro_conditioning_aesthetic_score: float | None = None,
        micro_conditioning_crop_coord: tuple[int, int] | None = None,
        sr_strength: float | None = None,
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
            concepts: Perfusion concepts (``Concept`` objects or concept file paths) whose tokens the prompts use.
            concept_bias: the gate bias beta at inference (no retraining): lower gives more concept similarity,
                higher more text alignment, while the gate at the concept's own token is not saturated (on the
                bundled model from about 0.7 to 1.0; below 0.7 it only opens other tokens' gates and both fall; default
                0.8, chosen on validation concepts).
            concept_temperature: the gate temperature tau at inference.
            key_locking: "local" (the superclass's key in the same prompt) or "global" (the key pathway reads
                the whole prompt re-encoded with the superclass in place of the concept).
            micro_conditioning_aesthetic_score: aMUSEd models only: the aesthetic score condition (default 6, as
                diffusers).
            micro_conditioning_crop_coord: aMUSEd models only: the (x, y) crop condition (default (0, 0)).
            sr_strength: share of the super-resolution tokens the SR transformer decodes (default from the pipeline
                config; 1 = all, as in Muse). Below 1, the SR tokens start from the base image upsampled and
                re-tokenized, and that share of them, at random, is re-masked and decoded.

        Returns:
            ``ImageOutput(images, ids, base_ids)``, or the tuple ``(images, ids)`` when ``return_dict`` is False.
        """
        micro = {
            "micro_conditioning_aesthetic_score": micro_conditioning_aesthetic_score,
            "micro_conditioning_crop_coord": micro_conditioning_crop_coord,
            "sr_strength": sr_strength,
        }
        if concepts:
            with self.using_concepts(prompt, concepts, num_images_per_prompt, concept_bias, concept_temperature,
                                     key_locking):  # fmt: skip
                return self(prompt, negative_prompt, num_inference_steps, sr_inference_steps, guidance_scale,
                            guidance_schedule, temperature, num_images_per_prompt, generator, output_type,
                            return_dict, sr_guidance_scale, top_k, **micro)  # fmt: skip
        prompts = self.check_prompts(prompt)
        options = SamplingOptions.resolve(
            self.config, num_inference_steps, sr_inference_steps, guidance_scale, sr_guidance_scale,
            guidance_schedule, temperature, top_k, num_images_per_prompt, output_type, **micro,
        )  # fmt: skip
        text = self.encode_prompt(prompts, negative_prompt, options.num_images_per_prompt, options.guidance_scale)
        batch = len(prompts) * options.num_images_per_prompt
        base_ids = self.generate_tokens(self.transformer, text, batch, options, generator)
        ids = base_ids
        if self.superres is not None:
            ids = self.super_resolve(base_ids, text, batch, options, generator)
        images = None if output_type == "ids" else self.decode(ids, output_type)
        if not return_dict:
            return images, ids
        return ImageOutput(images, ids, base_ids)

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
    def check_prompts(prompt: str | list[str]) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list | tuple) or not prompts:
            raise TypeError("prompt must be a non-empty string or a non-empty list of strings")
        for item in prompts:
            if not isinstance(item, str) or not item.strip():
                raise ValueError(
                    "prompt is empty: describe the image you want, e.g. 'a red circle on a blue background'"
                )
        return list(prompts)
