"""Train the base or super-resolution transformer on pre-encoded token shards (HF accelerate; CPU, GPU, multi-node).

Run directly (`musekit train --stage base ...`) or under `accelerate launch` / `torchrun`: each process takes a
disjoint slice of every global batch; batches and masks are fixed functions of (seed, step, rank), so a run killed
at any point resumes from its last checkpoint with the same data order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from musekit.config import SuperResConfig, TextEncoderConfig, TransformerConfig, VQConfig
from musekit.data.renders import object_token_coverage
from musekit.data.shapes import SIZE_RADIUS, ShapesWorld, caption
from musekit.data.tokens import TokenShards, batch_indices, encode_base_ids, encode_shards
from musekit.io.checkpoint import atomic_save_tensors, load_component
from musekit.io.images import make_grid, save_image
from musekit.models import MaskedTransformer, SuperResTransformer
from musekit.sampling.schedules import sample_mask_ratio, uniform
from musekit.text import build_text_encoder
from musekit.tokenizer import VQModel, code_usage, select_codes
from musekit.training.config import TrainConfig
from musekit.training.objectives import masked_modeling_loss
from musekit.training.runner import Runner

logger = logging.getLogger(__name__)

SAMPLE_PROMPTS = (
    "a large red circle in the center on a blue background",
    "a small yellow star at the top left on a black background",
    "a large green square at the bottom right on a white background",
    "a purple heart left of an orange cross on a gray background",
    "a blue triangle above a white circle on a striped background",
    "a small black cross at the right on a yellow background",
    "a large white star at the bottom on a checkered background",
    "an orange circle left of a green heart on a purple background",
)


def build_model(
    config: TrainConfig, vq: VQModel, text_dim: int, shards: TokenShards, allowed_codes: tuple[int, ...] = ()
) -> MaskedTransformer:
    lo, hi = shards.ids_lo.shape[-1], shards.ids_hi.shape[-1]
    codebook = vq.config.codebook_size
    torch.manual_seed(config.seed)
    if config.stage == "base":
        cfg = TransformerConfig.preset(config.model_preset)
        return MaskedTransformer(cfg.replace(text_dim=text_dim, codebook_size=codebook, grid_size=lo,
                                             allowed_codes=allowed_codes))  # fmt: skip
    cfg = SuperResConfig.preset(config.model_preset)
    cfg = cfg.replace(text_dim=text_dim, codebook_size=codebook, grid_size=hi, cond_grid_size=lo,
                      cond_codebook_size=codebook)  # fmt: skip
    return SuperResTransformer(cfg)


def train_transformer(
    config: TrainConfig,
    run_dir: str | Path,
    tokenizer_dir: str | Path,
    shards_dir: str | Path | None = None,
    text_encoder: TextEncoderConfig | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path | None:
    """Train ``config.stage`` ("base" or "sr"); returns the folder of the final weights."""
    if config.stage not in ("base", "sr"):
        raise ValueError("train_transformer trains the 'base' or 'sr' stage")
    runner = Runner(config, run_dir)
    vq = load_component(VQModel, VQConfig, tokenizer_dir).to(runner.device)
    world = ShapesWorld(config.world_seed, config.two_object_fraction, config.jitter)
    shards_dir = Path(shards_dir) if shards_dir is not None else Path(run_dir) / "shards"
    if runner.is_main and not (shards_dir / "meta.json").is_file():
        encode_shards(vq, world, shards_dir, config.num_examples, config.image_size, progress=progress)
    runner.accelerator.wait_for_everyone()
    shards = TokenShards(shards_dir)
    # re-renders (object masks, codebook subsets) must match the shards' drawing, whatever the config says
    world = ShapesWorld(shards.meta.get("world_seed", config.world_seed), config.two_object_fraction,
                        shards.meta.get("jitter", 1.0))  # fmt: skip
    encoder = build_text_encoder(text_encoder or TextEncoderConfig()).to(runner.device)
    empty = encoder.empty()
    base_ids, allowed = shards.ids_lo, ()
    if config.stage == "base" and config.base_codes:
        allowed_codes, base_ids = base_vocabulary(config, vq, world, shards, Path(run_dir), runner, progress)
        allowed = tuple(allowed_codes.tolist())
    if config.start_context > 0 and shards.ids_start is None:
        raise ValueError(
            f"start_context needs shards with ids_start; encode them with --lo-through ({shards_dir} has none)"
        )
    model = build_model(config, vq, encoder.hidden_size, shards, allowed)
    token_weights = object_token_weights(config, world, shards) if config.object_loss_weight != 1.0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay)
    model, optimizer, start = runner.setup(model, optimizer)
    model.train()
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=config.steps, desc=config.stage,
               disable=not (progress and runner.is_main))  # fmt: skip
    for step in bar:
        index = batch_indices(len(shards), config.batch_size, step, runner.rank, runner.world_size, config.seed)
        rng = np.random.default_rng([config.seed, step, runner.rank])
        prompts = [caption(world.example("train", int(shards.index[i])).scene, rng, config.partial_captions)
                   for i in index]  # fmt: skip
        text = encoder.encode(prompts)
        ids = (base_ids if config.stage == "base" else shards.ids_hi)[index].long().to(runner.device)
        cond = shards.ids_lo[index].long().to(runner.device) if config.stage == "sr" else None
        context = ratios = None
        if config.start_context > 0:
            blurry = uniform((len(index),), runner.step_generator(step, salt=1), runner.device) < config.start_context
            context = torch.where(blurry.view(-1, 1, 1), shards.ids_start[index].long().to(runner.device), ids)
            if config.start_context_max_mask < 1.0:
                ratios = sample_mask_ratio(len(index), runner.step_generator(step, salt=2), config.mask_schedule,
                                           device=runner.device)  # fmt: skip
                ratios = torch.where(blurry, ratios * config.start_context_max_mask, ratios)
        with runner.autocast():
            out = masked_modeling_loss(
                model, ids, text, empty, runner.step_generator(step), cond_ids=cond, cond_dropout=config.cond_dropout,
                label_smoothing=config.label_smoothing, schedule=config.mask_schedule,
                weights=None if token_weights is None else token_weights[index].to(runner.device),
                context_ids=context, ratios=ratios,
            )  # fmt: skip
        runner.optimizer_step(model, optimizer, out.loss, step)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            runner.log(done, {"loss": out.loss.item(), "accuracy": out.accuracy.item()})
            bar.set_postfix(loss=f"{out.loss.item():.3f}", acc=f"{out.accuracy.item():.3f}")
        if done % config.checkpoint_every == 0 or done in (config.steps, end):
            runner.checkpoint(done, model, optimizer)
        if runner.is_main and config.sample_every and (done % config.sample_every == 0 or done == config.steps):
            write_samples(runner, model, vq, encoder, shards, done)
    if end < config.steps:
        return None  # stopped early; rerun to resume
    core = runner.accelerator.unwrap_model(model)
    return runner.export(model, core.config)


BASE_VOCABULARY = "base-codes.safetensors"


def base_vocabulary(
    config: TrainConfig,
    vq: VQModel,
    world: ShapesWorld,
    shards: TokenShards,
    run_dir: Path,
    runner: Runner,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed code ids, base ids re-tokenized with them) for ``config.base_codes``; computed once per run (main
    process) and kept in the run folder, so a resumed run reuses them."""
    path = run_dir / BASE_VOCABULARY
    if runner.is_main and not path.is_file():
        usage = code_usage(shards.ids_lo, vq.config.codebook_size)
        allowed = select_codes(vq.quantizer.codebook(), usage, config.base_codes)
        ids = encode_base_ids(vq, world, shards.index, config.image_size, allowed, shards.meta.get("split", "train"),
                              progress=progress)  # fmt: skip
        atomic_save_tensors({"allowed_codes": allowed, "ids_lo": ids}, path)
        logger.info("base vocabulary: %d of %d codes (%s)", len(allowed), vq.config.codebook_size, path)
    runner.accelerator.wait_for_everyone()
    saved = load_file(str(path))
    return saved["allowed_codes"], saved["ids_lo"]


def object_token_weights(config: TrainConfig, world: ShapesWorld, shards: TokenShards) -> torch.Tensor:
    """(N, h, w) loss weights of the stage's token grids: ``object_loss_weight`` where an object touches a token,
    else 1. Most tokens are background, so a uniform loss spends the model on background codes; objects carry shape."""
    ids = shards.ids_lo if config.stage == "base" else shards.ids_hi
    size = config.base_image_size if config.stage == "base" else config.image_size
    examples = [world.example(shards.meta.get("split", "train"), int(i)) for i in shards.index]
    coverage = object_token_coverage(examples, size, ids.shape[-1])
    weight = torch.full((len(examples), 1, 1), config.object_loss_weight)
    if config.object_area_normalize:
        weight = weight * torch.tensor([object_area_factor(e.scene) for e in examples]).view(-1, 1, 1)
    return torch.where(coverage > 0, weight, 1.0)


def object_area_factor(scene) -> float:
    """(largest object radius / this scene's object radius)^2: how many times fewer tokens its objects touch."""
    largest = max(SIZE_RADIUS.values())
    return (largest / SIZE_RADIUS[scene.objects[0].size]) ** 2


@torch.no_grad()
def write_samples(runner: Runner, model, vq: VQModel, encoder, shards: TokenShards, step: int) -> None:
    """A grid of samples for fixed prompts (base) or fixed low-resolution tokens (sr) at this step."""
    from musekit.sampling import decode_tokens
    from musekit.text import TextEmbeddings

    core = runner.accelerator.unwrap_model(model)
    core.eval()
    text = encoder.encode(list(SAMPLE_PROMPTS))
    batch = len(SAMPLE_PROMPTS)
    guided = TextEmbeddings.cat([encoder.empty(batch), text])
    cond = None
    if runner.config.stage == "sr":
        cond = shards.ids_lo[:batch].long().to(runner.device)
        guided = TextEmbeddings.cat([encoder.empty(batch), encoder.encode([""] * batch)])
        cond = torch.cat([cond, cond])
    cache = core.precompute(guided, cond)
    grid = core.config.grid_size
    start = torch.full((batch, grid, grid), core.config.mask_token_id, device=runner.device)
    ids = decode_tokens(core, cache, start, 12, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    from musekit.io.images import tensor_to_pil

    save_image(make_grid(tensor_to_pil(vq.decode(ids)), columns=4), runner.run_dir / f"samples-{step:07d}.png")
    core.train()
