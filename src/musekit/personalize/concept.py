"""The concept file: a few KB of safetensors with everything a concept needs, tied to its base model.

Tensors, with P placeholders (one per piece of the superclass: "red circle" -> 2): ``embedding`` (P, d_text); per
transformer stage ``{stage}.target_input`` (P, d) and ``{stage}.value_outputs`` (layers, P, d); for the trained-K
variant also ``{stage}.key_outputs`` (layers, P, d). Files of one placeholder from before placeholders existed
((d_text,), (d,), (layers, d)) load as P = 1. Metadata: token, superclass,
variant, training beta and tau, and a fingerprint of the base model. C is never stored here: it belongs to the base
model (``perfusion_covariance.safetensors`` beside it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open

from musekit.io.checkpoint import atomic_save_tensors

VARIANTS = ("local", "global", "trained-k")
METHODS = ("perfusion", "textual-inversion", "custom-diffusion", "dreambooth")
FORMAT = "musekit-perfusion-concept"


@dataclass
class Concept:
    token: str
    superclass: str
    variant: str
    embedding: torch.Tensor
    target_inputs: dict[str, torch.Tensor]
    value_outputs: dict[str, torch.Tensor]
    key_outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    train_beta: float = 0.75
    train_tau: float = 0.1
    fingerprint: str = ""
    method: str = "perfusion"  # the baselines share the file format: an embedding and/or replaced weights
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # "stage::parameter name" -> tensor

    def __post_init__(self) -> None:
        if self.embedding.ndim == 1:  # one placeholder, stored without its axis
            self.embedding = self.embedding.unsqueeze(0)
            self.target_inputs = {k: v.unsqueeze(0) for k, v in self.target_inputs.items()}
            self.value_outputs = {k: v.unsqueeze(1) for k, v in self.value_outputs.items()}
            self.key_outputs = {k: v.unsqueeze(1) for k, v in self.key_outputs.items()}
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def pieces(self) -> int:
        """Placeholders: one per piece of the superclass."""
        return self.embedding.shape[0]

    def rounded(self, dtype: torch.dtype = torch.float16) -> Concept:
        """A copy whose tensors hold only values ``dtype`` represents (still float32): saving it in ``dtype`` and
        loading it back gives the same tensors, so a reloaded concept draws the same images as the one in memory.
        The trainers return concepts rounded to the file's default fp16."""

        def r(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dtype).float()

        return replace(
            self,
            embedding=r(self.embedding),
            target_inputs={k: r(v) for k, v in self.target_inputs.items()},
            value_outputs={k: r(v) for k, v in self.value_outputs.items()},
            key_outputs={k: r(v) for k, v in self.key_outputs.items()},
            weights={k: r(v) for k, v in self.weights.items()},
        )

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the concept atomically (fp16 by default: about 2 bytes per stored float)."""
        tensors = {"embedding": self.embedding, **{f"weights::{k}": v for k, v in self.weights.items()}}
        for stage, value in self.target_inputs.items():
            tensors[f"{stage}.target_input"] = value
            tensors[f"{stage}.value_outputs"] = self.value_outputs[stage]
            if stage in self.key_outputs:
                tensors[f"{stage}.key_outputs"] = self.key_outputs[stage]
        metadata = {"format": FORMAT, "token": self.token, "superclass": self.superclass, "variant": self.variant,
                    "train_beta": str(self.train_beta), "train_tau": str(self.train_tau),
                    "fingerprint": self.fingerprint, "method": self.method}  # fmt: skip
        path = Path(path)
        atomic_save_tensors(tensors, path, metadata=metadata, dtype=dtype)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Concept:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"concept file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k).float() for k in handle.keys()}  # noqa: SIM118
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a concept file: {err}") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a musekit concept file")
        stages = sorted({k.split(".")[0] for k in tensors if "." in k and not k.startswith("weights::")})
        return cls(
            token=meta["token"],
            superclass=meta["superclass"],
            variant=meta["variant"],
            embedding=tensors["embedding"],
            target_inputs={s: tensors[f"{s}.target_input"] for s in stages},
            value_outputs={s: tensors[f"{s}.value_outputs"] for s in stages},
            key_outputs={s: tensors[f"{s}.key_outputs"] for s in stages if f"{s}.key_outputs" in tensors},
            train_beta=float(meta["train_beta"]),
            train_tau=float(meta["train_tau"]),
            fingerprint=meta["fingerprint"],
            method=meta.get("method", "perfusion"),
            weights={k.removeprefix("weights::"): v for k, v in tensors.items() if k.startswith("weights::")},
        )


def model_fingerprint(pipe) -> str:
    """Hash of what a concept depends on: the text encoder identity and every stage's text path and K/V weights."""
    digest = hashlib.sha256()
    digest.update(json.dumps(pipe.text_encoder.config.to_dict(), sort_keys=True).encode())
    digest.update(str(pipe.text_encoder.hidden_size).encode())
    for name, model in stages(pipe).items():
        digest.update(name.encode())
        tensors = [model.text_proj.weight]
        for attn in model.text_attentions:
            tensors += [attn.to_k.weight if hasattr(attn.to_k, "weight") else attn.to_k.linear.weight]
            tensors += [attn.to_v.weight if hasattr(attn.to_v, "weight") else attn.to_v.linear.weight]
        for tensor in tensors:
            digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
            digest.update(str(float(tensor.detach().double().sum())).encode())
    return digest.hexdigest()[:16]


def stages(pipe) -> dict:
    """The transformers a concept edits, by name."""
    out = {"transformer": pipe.transformer}
    if pipe.superres is not None:
        out["superres"] = pipe.superres
    return out
