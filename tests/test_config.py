import json

import pytest

from musekit.config import (
    ConfigError,
    PipelineConfig,
    SchedulerConfig,
    SuperResConfig,
    TextEncoderConfig,
    TransformerConfig,
    VQConfig,
)

ALL = [VQConfig, TransformerConfig, SuperResConfig, TextEncoderConfig, SchedulerConfig, PipelineConfig]


def test_every_model_component_has_a_tiny_preset():
    for cls in (VQConfig, TransformerConfig, SuperResConfig, PipelineConfig):
        assert isinstance(cls.preset("tiny"), cls)


def test_derived_values_are_computed_not_stored():
    cfg = TransformerConfig.preset("tiny")
    assert cfg.mask_token_id == cfg.codebook_size
    assert cfg.vocab_size == cfg.codebook_size + 1
    assert "mask_token_id" not in cfg.to_dict() and "vocab_size" not in cfg.to_dict()
    assert VQConfig.preset("shapes-f4").downsample_factor == 4
    assert VQConfig.preset("f16").downsample_factor == 16


@pytest.mark.parametrize("cls", ALL)
def test_round_trip_through_json(cls, tmp_path):
    cfg = cls()
    cfg.save(tmp_path / "c.json")
    assert cls.load(tmp_path / "c.json") == cfg
    assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("cls", ALL)
def test_unknown_keys_are_an_error(cls):
    with pytest.raises(ConfigError, match="unknown key"):
        cls.from_dict({"not_a_field": 1})


def test_invalid_values_and_presets_are_errors():
    with pytest.raises(ConfigError):
        TransformerConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError):
        SchedulerConfig(mask_schedule="zigzag")
    with pytest.raises(ConfigError, match="unknown"):
        TransformerConfig.preset("huge")
    with pytest.raises(ConfigError):
        TextEncoderConfig(kind="gpt")


def test_configs_are_frozen():
    cfg = TransformerConfig()
    with pytest.raises(AttributeError):
        cfg.hidden_size = 3  # type: ignore[misc]
