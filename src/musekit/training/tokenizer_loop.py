"""Train the VQ tokenizer on shapes-world renders (HF accelerate; resumable like the transformer loop).

Each batch mixes whole renders at the base resolution with random crops of full-resolution renders, since the one
fully convolutional tokenizer serves both stages.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from musekit.config import ConfigError, VQConfig
from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import ShapesWorld
from musekit.eval.metrics import psnr
from musekit.io.images import make_grid, save_image, tensor_to_pil
from musekit.tokenizer import VQModel
from musekit.tokenizer.losses import (
    PatchDiscriminator,
    discriminator_hinge_loss,
    generator_adversarial_loss,
    reconstruction_loss,
)
from musekit.training.config import TrainConfig
from musekit.training.runner import Runner

logger = logging.getLogger(__name__)


def tokenizer_batch(
    world: ShapesWorld, config: TrainConfig, step: int, rank: int, world_size: int, generator, exact=None
):
    """(B, 3, s, s) float images, s = base image size: downsampled renders and (``config.crop_fraction`` of the
    batch) crops of full-resolution renders. With ``exact`` (the same world drawn with jitter 0), the first
    ``config.exact_fraction`` of the scenes are rendered exactly."""
    b = config.batch_size
    first = (step * world_size + rank) * b
    examples = world.examples("train", b, first)
    if exact is not None and config.exact_fraction > 0:
        n = round(b * config.exact_fraction)
        examples = exact.examples("train", n, first) + examples[n:]
    images = to_float(render_examples(examples, config.image_size))
    s = config.base_image_size
    half = b - round(b * config.crop_fraction)
    small = F.interpolate(images[:half], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    if half == b:
        return small
    offsets = torch.randint(0, config.image_size - s + 1, (b - half, 2), generator=generator)
    crops = torch.stack([img[:, y : y + s, x : x + s] for img, (y, x) in zip(images[half:], offsets.tolist())])
    return torch.cat([small, crops])


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1]: where neighbouring pixels differ (object outlines)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().sum(1, keepdim=True)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().sum(1, keepdim=True)
    edges = F.pad(dx, (0, 1, 0, 0)) + F.pad(dy, (0, 0, 0, 1))
    return F.max_pool2d((edges > 0.1).float(), 3, stride=1, padding=1)


def train_tokenizer(
    config: TrainConfig, run_dir: str | Path, progress: bool = True, stop_after: int | None = None
) -> Path | None:
    """Train the tokenizer preset ``config.model_preset``; returns the folder of the final weights."""
    if config.stage != "tokenizer":
        raise ValueError("train_tokenizer needs stage='tokenizer'")
    if config.freeze_codes and not config.init_from:
        raise ConfigError("freeze_codes needs init_from: the tokenizer whose encoder and codebook are kept")
    runner = Runner(config, run_dir)
    world = ShapesWorld(config.world_seed, config.two_object_fraction, config.jitter)
    exact = ShapesWorld(config.world_seed, config.two_object_fraction, 0.0) if config.exact_fraction > 0 else None
    vq_config = VQConfig.preset(config.model_preset)
    torch.manual_seed(config.seed)
    vq = VQModel(vq_config)
    if config.freeze_codes:
        for module in (vq.encoder, vq.quant_conv, vq.quantizer):
            module.requires_grad_(False)
    trainable = [p for p in vq.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay)
    vq, optimizer, start = runner.setup(vq, optimizer)
    if config.freeze_codes:
        frozen = {k: v.clone() for k, v in core_codes(runner.accelerator.unwrap_model(vq)).items()}
    disc = d_opt = None
    if config.adversarial_weight > 0:
        disc = PatchDiscriminator()
        d_opt = torch.optim.AdamW(disc.parameters(), lr=config.lr, betas=(0.5, 0.9))
        disc, d_opt = runner.accelerator.prepare(disc, d_opt)
    core: VQModel = runner.accelerator.unwrap_model(vq)
    vq.train()
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=config.steps, desc="tokenizer",
               disable=not (progress and runner.is_main))  # fmt: skip
    for step in bar:
        generator = runner.step_generator(step)
        images = tokenizer_batch(world, config, step, runner.rank, runner.world_size, generator, exact)
        images = images.to(runner.device)
        out = vq(images, frozen_codes=config.freeze_codes)
        loss = reconstruction_loss(out.reconstruction, images, config.l1_weight, config.l2_weight)
        loss = loss + out.quantizer.loss  # zero with frozen codes
        if config.edge_weight > 0:
            weight = edge_map(images)
            loss = loss + config.edge_weight * ((out.reconstruction - images).abs() * weight).mean()
        use_gan = disc is not None and step >= config.adversarial_start
        if use_gan:
            loss = loss + config.adversarial_weight * generator_adversarial_loss(disc(out.reconstruction))
        runner.optimizer_step(vq, optimizer, loss, step)
        if use_gan:
            d_loss = discriminator_hinge_loss(disc(images), disc(out.reconstruction.detach()))
            d_opt.zero_grad(set_to_none=True)
            runner.accelerator.backward(d_loss)
            d_opt.step()
        if not config.freeze_codes and config.restart_dead_every and (step + 1) % config.restart_dead_every == 0:
            latents = runner.accelerator.gather(out.latents.detach().contiguous())
            core.quantizer.restart_dead_codes(latents, generator=torch.Generator().manual_seed(config.seed + step))
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            value = psnr(out.reconstruction.detach().clamp(0, 1), images).item()
            stats = {"loss": loss.item(), "psnr": value, "perplexity": out.quantizer.perplexity.item(),
                     "usage": out.quantizer.usage.item()}  # fmt: skip
            runner.log(done, stats)
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{value:.1f}", ppl=f"{stats['perplexity']:.0f}")
        if done % config.checkpoint_every == 0 or done in (config.steps, end):
            runner.checkpoint(done, vq, optimizer)
        if runner.is_main and config.sample_every and (done % config.sample_every == 0 or done == config.steps):
            write_reconstructions(core, world, config, runner.run_dir / f"recon-{done:07d}.png")
    if config.freeze_codes:
        kept = core_codes(core)
        if any(not torch.equal(frozen[k], kept[k]) for k in frozen):
            raise RuntimeError("freeze_codes: the encoder or codebook changed during training")
    if end < config.steps:
        return None  # stopped early; rerun to resume
    return runner.export(vq, vq_config)


def core_codes(vq: VQModel) -> dict[str, torch.Tensor]:
    """The tensors that decide which code an image patch gets (encoder, quant_conv, codebook)."""
    return {k: v for k, v in vq.state_dict().items() if not k.startswith(("decoder.", "post_quant_conv."))
            and "usage" not in k}  # fmt: skip


@torch.no_grad()
def write_reconstructions(vq: VQModel, world: ShapesWorld, config: TrainConfig, path: Path) -> None:
    """Rows of validation renders (full resolution; base resolution for a base-only tokenizer) above their
    reconstructions."""
    vq.eval()
    size = config.image_size if config.crop_fraction > 0 else config.base_image_size
    images = render_examples(world.examples("val", 6), config.image_size)
    images = F.interpolate(to_float(images), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    images = images.to(next(vq.parameters()).device)
    recon = vq.decode(vq.encode(images))
    save_image(make_grid(tensor_to_pil(torch.cat([images, recon])), columns=6), path)
    vq.train()
