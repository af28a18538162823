import json
import shutil

import pytest
import torch

from musekit.config import TextEncoderConfig
from musekit.text import build_text_encoder, load_text_encoder, save_text_encoder
from musekit.text.minilm import bundled_minilm_path

from .conftest import TOKENIZER_FILES


def test_interface_shapes_and_padding_mask(tiny_text_encoder):
    out = tiny_text_encoder.encode(["a red circle", "a big blue square on a green background"])
    assert out.hidden_states.shape == (2, 16, 32) and out.pooled.shape == (2, 32)
    assert out.attention_mask.dtype == torch.bool and out.attention_mask.shape == (2, 16)
    lengths = out.attention_mask.sum(1)
    assert lengths[0] < lengths[1] < 16  # padding is masked out
    assert not any(p.requires_grad for p in tiny_text_encoder.parameters())


def test_empty_prompt_is_cached(tiny_text_encoder):
    first = tiny_text_encoder.empty(3)
    assert first.hidden_states.shape[0] == 3
    assert tiny_text_encoder._empty is not None
    assert torch.equal(tiny_text_encoder.empty(1).hidden_states, tiny_text_encoder.encode("").hidden_states)


def test_bundled_minilm_loads_offline():
    encoder = build_text_encoder(TextEncoderConfig())
    out = encoder.encode(["a red circle", "a crimson ring"])
    assert out.hidden_states.shape[-1] == 384
    sim = torch.nn.functional.cosine_similarity(out.pooled[0], out.pooled[1], dim=0)
    assert 0.3 < sim < 1.0  # a real sentence encoder: paraphrases are close but not identical


def test_save_load_keeps_custom_weights(tiny_text_encoder, tmp_path):
    save_text_encoder(tiny_text_encoder, tmp_path / "te")
    loaded = load_text_encoder(tmp_path / "te")
    a, b = tiny_text_encoder.encode("hello"), loaded.encode("hello")
    assert torch.allclose(a.hidden_states, b.hidden_states)


def test_clip_adapter_penultimate_and_projection(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=8,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).save_pretrained(tmp_path)
    encoder = build_text_encoder(TextEncoderConfig(kind="clip", path=str(tmp_path), max_length=16, hidden_layer=-2))
    out = encoder.encode(["a cat"])
    assert out.hidden_states.shape == (1, 16, 16) and out.pooled.shape == (1, 8)
    ids, mask = encoder.tokenize(["a cat"])
    reference = encoder.model(input_ids=ids, output_hidden_states=True)
    real = mask.bool()
    assert torch.allclose(out.hidden_states[real], reference.hidden_states[-2][real], atol=1e-6)
    assert (out.hidden_states[~real] == 0).all()
    assert torch.allclose(out.pooled, reference.text_embeds)


def test_t5_adapter(tmp_path):
    from transformers import T5Config, T5EncoderModel

    for name in TOKENIZER_FILES:  # any local tokenizer works through AutoTokenizer
        shutil.copy2(bundled_minilm_path() / name, tmp_path / name)
    config = T5Config(vocab_size=30522, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(tmp_path)
    encoder = build_text_encoder(TextEncoderConfig(kind="t5", path=str(tmp_path), max_length=12))
    out = encoder.encode(["a red circle"])
    assert out.hidden_states.shape == (1, 12, 16) and out.pooled.shape == (1, 16)


def test_missing_local_folders_are_clear_errors(tmp_path):
    for kind in ("clip", "t5", "minilm"):
        with pytest.raises(FileNotFoundError, match="not found"):
            build_text_encoder(TextEncoderConfig(kind=kind, path=str(tmp_path / "nope")))


def test_encoding_up_to_the_longest_prompt_matches_full_padding(tiny_text_encoder):
    prompts = ["a red circle", "a big blue square on a green background at the top"]
    fast = tiny_text_encoder.encode(prompts)
    ids, mask = tiny_text_encoder.tokenize(prompts)
    hidden, _ = tiny_text_encoder._encode_tokens(ids, mask)
    hidden = hidden * mask.unsqueeze(-1)
    assert fast.hidden_states.shape == hidden.shape
    assert torch.allclose(fast.hidden_states, hidden, atol=1e-5)


def test_a_truncated_prompt_is_named_briefly(tiny_text_encoder, caplog):
    long = " ".join(["a red circle"] * 200)
    with caplog.at_level("WARNING"):
        tiny_text_encoder.encode([long, "a red circle"])
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "16 tokens" in warnings[0] and len(warnings[0]) < 200
    kept = tiny_text_encoder.tokenizer.decode(tiny_text_encoder.tokenize([long])[0][0], skip_special_tokens=True)
    assert warnings[0].endswith(repr(kept[-40:]))  # the text that is kept, the end token not counted


def test_text_embeddings_slice_every_field(tiny_text_encoder):
    text = tiny_text_encoder.encode(["a red circle", "a blue square", "a green star"])
    part = text[1:]
    assert len(part) == 2
    for whole, sliced in zip((text.hidden_states, text.pooled, text.attention_mask),
                             (part.hidden_states, part.pooled, part.attention_mask)):  # fmt: skip
        assert torch.equal(sliced, whole[1:])
