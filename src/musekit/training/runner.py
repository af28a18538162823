"""What every training loop shares: accelerate setup, resume, learning rate, logging, checkpoints, final export."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from musekit.config import BaseConfig
from musekit.io.checkpoint import WEIGHTS_NAME, load_state_matching, load_state_strict, save_component
from musekit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from musekit.training.config import TrainConfig, lr_at
from musekit.training.ema import EMA

logger = logging.getLogger(__name__)


class Runner:
    """Owns the accelerator, the optimizer, EMA and the run folder of one training run."""

    def __init__(self, config: TrainConfig, run_dir: str | Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        # mixed precision is our own autocast (``autocast``), not accelerate's: its state is one per process and
        # cannot change between runs of one process (tests, notebooks)
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        if self.device.type == "cuda":  # training matmuls in TF32 (sampling stays exact fp32 unless asked otherwise)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved = self.run_dir / "config.json"
            if saved.is_file():
                earlier = TrainConfig.load(saved)
                # the precision of the arithmetic may change on resume (another machine); the recipe may not
                differ = [k for k, v in earlier.to_dict().items() if v != getattr(config, k) and k != "mixed_precision"]
                if differ:
                    raise ValueError(f"{saved} holds a different config ({', '.join(differ)}); use a new run folder "
                                     "or the same config")  # fmt: skip
                if earlier.mixed_precision != config.mixed_precision:
                    logger.warning("resuming with mixed_precision %r (the run began with %r)",
                                   config.mixed_precision, earlier.mixed_precision)  # fmt: skip
            config.save(saved)
        self.accelerator.wait_for_everyone()
        self.start_time = time.perf_counter()

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer, int]:
        """Resume from the latest checkpoint if any, then wrap for (distributed) training. Returns the start step."""
        start, ema_state = 0, None
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is not None:
            state, ema_state = load_checkpoint(checkpoint, model, optimizer)
            start = int(state["step"])
            logger.info("resumed from %s at step %d", checkpoint, start)
        elif self.config.init_from:
            # A fresh run that continues from earlier weights (fresh optimizer and schedule); a resumed run
            # ignores this, its checkpoint already holds those weights and more.
            weights = Path(self.config.init_from) / WEIGHTS_NAME
            if self.config.init_partial:
                fresh = load_state_matching(model, weights)
                logger.info("initialized weights from %s except %s", self.config.init_from, fresh)
            else:
                load_state_strict(model, weights)
                logger.info("initialized weights from %s", self.config.init_from)
        self.ema = EMA(model, self.config.ema_decay) if self.config.ema_decay > 0 else None
        if self.ema is not None and ema_state is not None:
            self.ema.load_state_dict(ema_state)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        if self.ema is not None:
            self.ema.to(self.device)
        return model, optimizer, start

    def autocast(self):
        """The context of a training forward: bf16 autocast under ``mixed_precision`` "bf16", else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.mixed_precision == "bf16")

    def step_generator(self, step: int, salt: int = 0) -> torch.Generator:
        """A generator that is a fixed function of (seed, step, rank): resumed runs draw the same randomness."""
        seed = (self.config.seed * 1_000_003 + step * 7919 + self.rank * 104_729 + salt) % (2**63)
        return torch.Generator(device="cpu").manual_seed(seed)

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(self.config, step)
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.config.grad_clip > 0:
            self.accelerator.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        optimizer.step()
        if self.ema is not None:
            self.ema.update(self.accelerator.unwrap_model(model))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        row = {"step": step, "elapsed_s": round(time.perf_counter() - self.start_time, 1), **values}
        with (self.run_dir / "log.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def checkpoint(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            ema = self.ema.state_dict() if self.ema is not None else None
            save_checkpoint(self.run_dir, step, self.accelerator.unwrap_model(model), optimizer, ema)
        self.accelerator.wait_for_everyone()

    def export(self, model: nn.Module, config: BaseConfig) -> Path:
        """Write the final weights (EMA when enabled) as a component folder ``run/final``."""
        self.accelerator.wait_for_everyone()
        core = self.accelerator.unwrap_model(model)
        out = self.run_dir / "final"
        if self.is_main:
            if self.ema is not None:
                backup = {k: v.detach().clone() for k, v in core.state_dict().items()}
                self.ema.copy_to(core)
                save_component(core, config, out)
                core.load_state_dict(backup)
            else:
                save_component(core, config, out)
        # Each replica records a checksum of its weights: under data parallelism they must all agree.
        digest = hashlib.sha256()
        for name, value in sorted(core.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        (self.run_dir / f"replica-{self.rank}.sha256").write_text(digest.hexdigest() + "\n")
        self.accelerator.wait_for_everyone()
        return out
