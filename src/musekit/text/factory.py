"""Build, save and load text encoders by config ``kind``."""

from __future__ import annotations

from pathlib import Path

from musekit.config import TextEncoderConfig
from musekit.io.checkpoint import CONFIG_NAME
from musekit.text.base import TextEncoder

MUSEKIT_CONFIG = "musekit_text_encoder.json"


def build_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    """Instantiate the encoder named by ``config.kind`` from local files only."""
    if config.kind == "minilm":
        from musekit.text.minilm import MiniLMTextEncoder

        return MiniLMTextEncoder(config)
    if config.kind == "clip":
        from musekit.text.clip import CLIPTextEncoder

        return CLIPTextEncoder(config)
    if config.kind == "t5":
        from musekit.text.t5 import T5TextEncoder

        return T5TextEncoder(config)
    raise ValueError(f"unknown text encoder kind {config.kind!r}")


def save_text_encoder(encoder: TextEncoder, folder: str | Path) -> None:
    """Write ``folder/musekit_text_encoder.json``; copy the weights unless they are the bundled MiniLM."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = encoder.config
    if config.path is not None:
        if Path(encoder.path).resolve() != folder.resolve():
            encoder.tokenizer.save_pretrained(str(folder))
            encoder.model.save_pretrained(str(folder))
        config = config.replace(path=".")
    config.save(folder / MUSEKIT_CONFIG)


def load_text_encoder(folder: str | Path) -> TextEncoder:
    """Load an encoder saved by ``save_text_encoder``; a relative ``path`` is resolved against ``folder``."""
    folder = Path(folder)
    config_file = folder / MUSEKIT_CONFIG
    if not config_file.is_file():
        if (folder / CONFIG_NAME).is_file():  # a bare transformers folder: guess from its model type
            config = TextEncoderConfig(kind="clip" if "clip" in (folder / CONFIG_NAME).read_text() else "minilm")
            return build_text_encoder(config.replace(path=str(folder)))
        raise FileNotFoundError(f"no text encoder in {folder} ({MUSEKIT_CONFIG} missing)")
    config = TextEncoderConfig.load(config_file)
    if config.path is not None and not Path(config.path).is_absolute():
        config = config.replace(path=str((folder / config.path).resolve()))
    return build_text_encoder(config)
