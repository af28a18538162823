"""Where the int8 path's top-1 drift comes from, on the random-weight amused-256 transformer of `musekit bench amused`
(batch 1 with guidance, its fixed half-masked probe): the logits' top-1/top-2 margins, then top-1 agreement and
cosine with fp32 when (a) every per-step linear is int8 (weights and activations, as ``Int8Linear``), (b) only the
weights are rounded, (c) only the activations are, and (d) one kind of linear at a time (weights and activations).

Usage: python benchmarks/int8_sensitivity.py [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
from collections import defaultdict

import torch
from torch import nn

from musekit.eval.bench_amused import random_models
from musekit.models.quantize import logits_fidelity, step_linears
from musekit.text import TextEmbeddings


class RoundedLinear(nn.Module):
    """``Int8Linear``'s rounding in fp32 arithmetic, with the weight and activation rounding switchable."""

    def __init__(self, linear: nn.Linear, weights: bool, activations: bool) -> None:
        super().__init__()
        weight = linear.weight.detach()
        if weights:
            scale = weight.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
            weight = torch.round(weight / scale) * scale
        self.weight, self.bias, self.activations = weight, linear.bias, activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations:
            scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
            x = torch.round(x / scale) * scale
        return nn.functional.linear(x, self.weight, self.bias)


def rounded(model: nn.Module, names: list[str], weights: bool = True, activations: bool = True) -> nn.Module:
    out = copy.deepcopy(model)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = out.get_submodule(parent) if parent else out
        setattr(owner, leaf, RoundedLinear(getattr(owner, leaf), weights, activations))
    return out


def kind_of(name: str) -> str:
    """Group a linear's name: transformer layers by their role, the conv stages' linears together."""
    if name.startswith(("down_block", "up_block")):
        return "conv-stage linears (res blocks, their attentions)"
    parts = name.split(".")
    if parts[0] != "transformer_layers":
        return name
    role = ".".join(parts[2:])
    return {"ff.net.0.proj": "ff in (GEGLU)", "ff.net.2": "ff out"}.get(role, role.replace(".linear", " (ada-norm)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, _, model = random_models("amused-256")
    g = torch.Generator().manual_seed(0)  # the probe of run_bench at batch 1
    states = torch.randn(2, 77, config.encoder_hidden_size, generator=g)
    pooled = torch.randn(2, config.cond_embed_dim, generator=g)
    side = float(config.sample_size * 16)
    micro = torch.tensor([[side, side, 0.0, 0.0, 6.0]]).repeat(2, 1)
    text = TextEmbeddings(states, pooled, torch.ones(states.shape[:2], dtype=torch.bool))
    grid = config.sample_size
    with torch.no_grad():
        cache = model.precompute(text, micro_conds=micro)
        probe = torch.randint(0, config.codebook_size, (2, grid, grid), generator=g)
        probe[torch.rand(probe.shape, generator=g) < 0.5] = config.mask_token_id
        reference = model(probe, cache=cache)
    top2 = reference.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    print(f"logits std {reference.std():.3f}; top-1/top-2 margin median {margin.median():.4f}, "
          f"{(margin < 0.01).float().mean():.1%} of positions below 0.01")  # fmt: skip
    names = step_linears(model, lambda m: m(probe, cache=cache))
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[kind_of(name)].append(name)
    runs = [("all linears, weights + activations", names, True, True),
            ("all linears, weights only", names, True, False),
            ("all linears, activations only", names, False, True)]  # fmt: skip
    runs += [(f"only {kind} ({len(group)})", group, True, True) for kind, group in groups.items()]
    for label, group, weights, activations in runs:
        with torch.no_grad():
            logits = rounded(model, group, weights, activations)(probe, cache=cache)
        fidelity = logits_fidelity(reference, logits)
        print(f"{label}: top-1 {fidelity['top1_agreement']:.2%}, cosine {fidelity['cosine_mean']:.5f}", flush=True)


if __name__ == "__main__":
    main()
