"""Training recipes as typed, frozen configs (saved resolved in every run folder)."""

from __future__ import annotations

from dataclasses import dataclass

from musekit.config import MASK_SCHEDULES, BaseConfig, ConfigError

STAGES = ("tokenizer", "base", "sr")
MIXED_PRECISION = ("no", "bf16")


@dataclass(frozen=True)
class TrainConfig(BaseConfig):
    """One training run of one stage. Batch size is per process (``accelerate launch``/torchrun multiply it)."""

    stage: str = "base"
    model_preset: str = "shapes"  # preset of VQConfig / TransformerConfig / SuperResConfig for the stage
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 disables EMA weights
    seed: int = 0
    init_from: str = ""  # a component folder (e.g. an earlier run's final/) whose weights start a fresh run
    init_partial: bool = False  # init_from loads only the tensors that match by name and shape (new codebook)
    # data: the shapes world
    world_seed: int = 0
    two_object_fraction: float = 0.4
    jitter: float = 1.0  # rendering-noise scale of the renders (0: every scene drawn exactly on its attributes)
    image_size: int = 128  # final (super-resolution) image side; the base stage sees image_size // 2
    num_examples: int = 50000  # examples pre-encoded to token shards (transformer stages)
    # transformer objective
    cond_dropout: float = 0.1
    # share of captions that leave some attributes out (``musekit.data.shapes.partial_caption``): without them a
    # model meets "a red circle" (no size, place or background) only at sampling time, and draws confetti
    partial_captions: float = 0.0
    label_smoothing: float = 0.1
    mask_schedule: str = "cosine"
    base_codes: int = 0  # > 0: the base predicts this many codes of the codebook (tokenizer.code_subset); 0 = all
    object_loss_weight: float = 1.0  # loss weight of tokens an object touches (renders know the masks); 1 = uniform
    # scale each scene's object weight by (large radius / its objects' radius)^2, so a small object's tokens weigh as
    # much in all as a large one's (small objects touch about a third as many tokens and are where shape is lost)
    object_area_normalize: bool = False
    # super-resolution only: the share of samples whose unmasked tokens are those of the upsampled base image
    # (the shards' ``ids_start``) instead of the render's, i.e. the context the stage meets at sr_strength < 1,
    # where it redraws a share of a blurry start; the loss still asks for the render's tokens at masked positions
    start_context: float = 0.0
    # the masking rate of those start-context samples is the schedule's rate times this (1: as every other sample);
    # at sr_strength s the stage only ever decodes from at most a share s masked, so a low cap spends the
    # start-context samples where sampling uses them
    start_context_max_mask: float = 1.0
    # tokenizer objective
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    edge_weight: float = 0.0  # extra L1 weight on pixels near edges (where shapes live)
    adversarial_weight: float = 0.0
    adversarial_start: int = 0
    restart_dead_every: int = 100
    crop_fraction: float = 0.5  # share of tokenizer batches that are full-resolution crops (0: base-stage only)
    # train only the decoder (and post-quantization conv) of an init_from tokenizer: the encoder and codebook stay
    # frozen, so every token a transformer was trained on keeps its meaning
    freeze_codes: bool = False
    exact_fraction: float = 0.0  # share of each tokenizer batch rendered exactly (jitter 0), the rest with `jitter`
    # transformer stages: "bf16" runs the forward under bf16 autocast (weights, gradients, optimizer and EMA stay
    # fp32; no loss scaling needed). Pays on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX), where torch's bf16
    # products beat fp32; elsewhere bf16 is far slower (docs/BENCHMARKS.md)
    mixed_precision: str = "no"
    # bookkeeping
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"TrainConfig: stage must be one of {STAGES}")
        if self.mask_schedule not in MASK_SCHEDULES:
            raise ConfigError(f"TrainConfig: mask_schedule must be one of {MASK_SCHEDULES}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"TrainConfig: mixed_precision must be one of {MIXED_PRECISION}")
        if self.mixed_precision != "no" and self.stage == "tokenizer":
            raise ConfigError("TrainConfig: mixed_precision applies to the transformer stages (a tokenizer's "
                              "nearest-code search needs fp32)")  # fmt: skip
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("TrainConfig: steps, batch_size and lr must be positive")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 <= self.cond_dropout <= 1.0:
            raise ConfigError("TrainConfig: ema_decay in [0, 1) and cond_dropout in [0, 1]")
        if not 0.0 <= self.partial_captions <= 1.0:
            raise ConfigError("TrainConfig: partial_captions must be in [0, 1]")
        if self.base_codes < 0:
            raise ConfigError("TrainConfig: base_codes must be >= 0 (0 = the whole codebook)")
        if self.object_loss_weight <= 0:
            raise ConfigError("TrainConfig: object_loss_weight must be positive")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError("TrainConfig: jitter must be in [0, 1]")
        if not 0.0 <= self.crop_fraction <= 1.0:
            raise ConfigError("TrainConfig: crop_fraction must be in [0, 1]")
        if not 0.0 <= self.start_context <= 1.0:
            raise ConfigError("TrainConfig: start_context must be in [0, 1]")
        if self.start_context > 0 and self.stage != "sr":
            raise ConfigError("TrainConfig: start_context applies to the super-resolution stage only")
        if not 0.0 < self.start_context_max_mask <= 1.0:
            raise ConfigError("TrainConfig: start_context_max_mask must be in (0, 1]")
        if self.start_context_max_mask < 1.0 and self.start_context == 0:
            raise ConfigError("TrainConfig: start_context_max_mask needs start_context > 0")
        if not 0.0 <= self.exact_fraction <= 1.0:
            raise ConfigError("TrainConfig: exact_fraction must be in [0, 1]")
        if self.image_size % 2:
            raise ConfigError("TrainConfig: image_size must be even")

    @property
    def base_image_size(self) -> int:
        return self.image_size // 2


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    import math

    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
