"""Experiment: a learned 2x upsampler between the base stage and the super-resolution tokenizer.

The 128 px stage starts from the base stage's 64 px image upsampled and re-tokenized by the SR tokenizer
(``musekit.editing.img2img.upsampled_start_ids``); bilinear upsampling blurs small objects, and the re-tokenization
loses shapes there. This trains a small CNN (64 px base-tokenizer reconstruction -> 128 px render, on train-split
scenes) and compares it with bilinear on held-out renders: PSNR against the 128 px render, and the checker's reading
of the SR tokenizer's re-tokenization of each.

Usage: python benchmarks/upsampler_probe.py [--train 6000] [--steps 1500] [--out runs/upsampler.safetensors]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from musekit.data.renders import labels_of
from musekit.data.shapes import ShapesWorld
from musekit.data.tokens import render_stages
from musekit.eval.checker import attribute_accuracy, load_checker
from musekit.pipeline import MusePipeline


class Upsampler(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, channels, 3, padding=1)
        conv = lambda: nn.Conv2d(channels, channels, 3, padding=1)  # noqa: E731
        self.body = nn.ModuleList(nn.Sequential(conv(), nn.SiLU(), conv()) for _ in range(blocks))
        self.out = nn.Conv2d(channels, 12, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x * 2 - 1)
        for block in self.body:
            h = h + block(F.silu(h))
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return up + F.pixel_shuffle(self.out(F.silu(h)), 2)


@torch.no_grad()
def make_pairs(pipe, world, split, count, start=0, batch=64):
    allowed = getattr(pipe.transformer.config, "allowed_codes", ())
    allowed = torch.tensor(allowed, dtype=torch.long) if allowed else None
    lo, hi, examples = [], [], []
    for s in range(start, start + count, batch):
        ex = world.examples(split, min(batch, start + count - s), s)
        images, small = render_stages(ex, 128)
        lo.append(pipe.vqgan.decode(pipe.vqgan.encode(small, allowed)))
        hi.append(images)
        examples += ex
    return torch.cat(lo), torch.cat(hi), examples


def psnr(a, b):
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=480)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--crop", type=int, default=32, help="train on crops of this size (64 px input; 0: whole)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/upsampler.safetensors")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MusePipeline.from_pretrained(args.model)
    world = ShapesWorld(0)
    began = time.perf_counter()
    lo, hi, _ = make_pairs(pipe, world, "train", args.train)
    test_lo, test_hi, test_examples = make_pairs(pipe, world, "heldout", args.test, start=2000)
    print(f"data {time.perf_counter() - began:.1f} s", flush=True)

    model = Upsampler(args.channels, args.blocks)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    began = time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(lo), (args.batch,), generator=gen)
        x, y = lo[idx], hi[idx]
        if args.crop:
            top, left = (int(v) for v in torch.randint(0, 64 - args.crop + 1, (2,), generator=gen))
            x = x[..., top : top + args.crop, left : left + args.crop]
            y = y[..., 2 * top : 2 * (top + args.crop), 2 * left : 2 * (left + args.crop)]
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} {time.perf_counter() - began:.0f} s", flush=True)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)

    checker = load_checker()
    labels = labels_of(test_examples)
    with torch.no_grad():
        bilinear = F.interpolate(test_lo, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
        learned = torch.cat([model(test_lo[i : i + 64]) for i in range(0, len(test_lo), 64)]).clamp(0, 1)
        for name, image in (("render", test_hi), ("bilinear", bilinear), ("learned", learned)):
            retok = pipe.sr_tokenizer.decode(pipe.sr_tokenizer.encode(image))
            acc = attribute_accuracy(checker.predict(retok), labels)
            acc_direct = attribute_accuracy(checker.predict(image), labels)
            print(
                f"{name}: PSNR {psnr(image, test_hi):.2f} dB, re-tokenized PSNR {psnr(retok, test_hi):.2f} dB; "
                f"shape direct {acc_direct['shape']:.3f}, re-tokenized {acc['shape']:.3f}; "
                f"re-tokenized { ({k: round(v, 3) for k, v in acc.items()}) }",
                flush=True,
            )


if __name__ == "__main__":
    main()
