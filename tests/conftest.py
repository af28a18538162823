"""Shared fixtures: tiny real components built with fixed seeds, all offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from musekit.config import TextEncoderConfig
from musekit.pipeline import MusePipeline
from musekit.text.minilm import MiniLMTextEncoder, bundled_minilm_path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_tiny_bert(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny random BERT with the real MiniLM tokenizer (so prompts tokenize as in the bundled model)."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(bundled_minilm_path() / name, folder / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_text_encoder(tiny_bert_dir) -> MiniLMTextEncoder:
    return MiniLMTextEncoder(TextEncoderConfig(kind="minilm", path=str(tiny_bert_dir), max_length=16))


@pytest.fixture()
def tiny_pipe(tiny_text_encoder) -> MusePipeline:
    pipe = MusePipeline.from_configs(tiny_text_encoder, vqgan="tiny", transformer="tiny", superres="tiny", seed=0)
    pipe.progress_bar = False
    return pipe


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_text_encoder) -> Path:
    pipe = MusePipeline.from_configs(tiny_text_encoder, vqgan="tiny", transformer="tiny", superres="tiny", seed=0)
    return pipe.save_pretrained(tmp_path_factory.mktemp("tiny_model") / "model")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def concept_images(n: int = 2) -> list[torch.Tensor]:
    """``n`` random 16 px images for learning concepts on the tiny pipelines."""
    return [torch.rand(3, 16, 16, generator=seeded(i)) for i in range(n)]


@pytest.fixture(scope="module")
def concept_pipe(tiny_text_encoder) -> MusePipeline:
    """A tiny pipeline for personalization tests, shared within a test module."""
    pipe = MusePipeline.from_configs(tiny_text_encoder, seed=0)
    pipe.progress_bar = False
    return pipe


# shared by the editing tests
PROMPT = "a small red circle at the top left on a blue background"


def scene(size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=seeded(7))


def quadrant_mask(size: int = 16) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., : size // 2, : size // 2] = True  # white (repaint) = top-left quadrant
    return mask


def cli_in_process(capsys, *args: str) -> tuple[int, str]:
    """``musekit ARGS`` run through ``musekit.cli.main.main`` in this process: (exit code, what it wrote to stderr).
    The same code path as the console script, without a new interpreter's start (5 s here) per case; each test file
    keeps a case or two in a subprocess for the console script itself."""
    from musekit.cli.main import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    return code, capsys.readouterr().err
