"""C: the uncentered second moment of the inputs of each cross-attention K/V input space.

Each masked transformer projects the text once (``project_text``) and the ``to_k``/``to_v`` of its
``text_attentions`` read that projected context, so there is one input space, and one C, per transformer. C is estimated
once per base model from a caption corpus (real tokens only; padding excluded) and stored beside the model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from musekit.io.checkpoint import atomic_save_tensors, read_weights
from musekit.models.transformer import MaskedTransformer
from musekit.text.base import TextEncoder

COVARIANCE_FILE = "perfusion_covariance.safetensors"


@torch.no_grad()
def estimate_covariance(
    model: MaskedTransformer, text_encoder: TextEncoder, captions: list[str], batch_size: int = 64, progress=False
) -> torch.Tensor:
    """(d, d) float64 E[e e^T] over every real (non-padding) token of ``captions`` in the model's K/V input space."""
    if not captions:
        raise ValueError("the caption corpus is empty")
    total, count = None, 0
    for start in tqdm(range(0, len(captions), batch_size), desc="covariance", disable=not progress, leave=False):
        chunk = captions[start : start + batch_size]
        text = text_encoder.encode(chunk)
        context, _ = model.project_text(text.to(next(model.parameters()).device))
        real_tokens = text_encoder.tokenize(chunk)[1].bool()  # the tokenizer's mask: models may attend to padding
        real = context[real_tokens.to(context.device)].double()  # (tokens, d)
        outer = real.t() @ real
        total = outer if total is None else total + outer
        count += real.shape[0]
    return total / count


def inverse(covariance: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """C^-1 in float64, with a tiny ridge relative to the mean eigenvalue for conditioning."""
    c = covariance.double()
    scale = c.diagonal().mean()
    return torch.linalg.inv(c + ridge * scale * torch.eye(c.shape[0], dtype=c.dtype, device=c.device))


def save_covariances(covariances: dict[str, torch.Tensor], folder: str | Path) -> Path:
    path = Path(folder) / COVARIANCE_FILE
    atomic_save_tensors({k: v.float() for k, v in covariances.items()}, path)
    return path


def load_covariances(folder: str | Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / COVARIANCE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no Perfusion covariance in {folder}; estimate it once with pipe.estimate_covariance() and store it with "
            "pipe.save_pretrained(folder) (musekit build-pipeline does both)"
        )
    return {k: v.double() for k, v in read_weights(path).items()}


def estimate_pipeline_covariances(pipe, captions: list[str] | None = None, count: int = 2000) -> dict:
    """C for every stage of ``pipe`` from ``captions`` (default: ``count`` shapes-world training captions)."""
    from musekit.personalize.concept import stages

    if captions is None:
        from musekit.data.shapes import ShapesWorld

        captions = [e.caption for e in ShapesWorld(0).examples("train", count)]
    return {name: estimate_covariance(model, pipe.text_encoder, captions) for name, model in stages(pipe).items()}


def covariances_for(pipe) -> dict[str, torch.Tensor]:
    """The model folder's stored C, or a fresh estimate from shapes-world captions."""
    folder = pipe.source_folder
    if folder is not None and (Path(folder) / COVARIANCE_FILE).is_file():
        return load_covariances(folder)
    return estimate_pipeline_covariances(pipe)
