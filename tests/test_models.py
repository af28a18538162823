import pytest
import torch
from torch import nn

from musekit.config import SuperResConfig, TransformerConfig
from musekit.models import MaskedTransformer, SuperResTransformer
from musekit.training import masked_modeling_loss

from .conftest import seeded


def build(cls, cfg_cls, text_dim=32, seed=0):
    torch.manual_seed(seed)
    return cls(cfg_cls.preset("tiny").replace(text_dim=text_dim))


def random_ids(model, batch=2, seed=0, high=None):
    c = model.config
    return torch.randint(0, high or c.codebook_size, (batch, c.grid_size, c.grid_size), generator=seeded(seed))


def low_res_ids(model, batch=2, seed=1):
    c = model.config
    return torch.randint(0, c.cond_codebook_size, (batch, c.cond_grid_size, c.cond_grid_size), generator=seeded(seed))


def test_logits_cover_the_codebook_only(tiny_text_encoder):
    model = build(MaskedTransformer, TransformerConfig)
    text = tiny_text_encoder.encode(["a", "b"])
    ids = random_ids(model)
    ids[:, 0, 0] = model.config.mask_token_id
    logits = model(ids, text=text)
    assert logits.shape == (2, model.config.seq_len, model.config.codebook_size)
    assert torch.isfinite(logits).all()


def test_cross_attentions_have_explicit_projections():
    model = build(MaskedTransformer, TransformerConfig)
    for attn in model.cross_attentions:
        for name in ("to_q", "to_k", "to_v", "to_out"):
            assert isinstance(getattr(attn, name), nn.Linear)


@pytest.mark.parametrize("kind", ["base", "sr"])
def test_every_parameter_receives_a_gradient(kind, tiny_text_encoder):
    model = build(
        *((MaskedTransformer, TransformerConfig) if kind == "base" else (SuperResTransformer, SuperResConfig))
    )
    text = tiny_text_encoder.encode(["a red circle", "a blue square"])
    cond = low_res_ids(model) if kind == "sr" else None
    out = masked_modeling_loss(
        model, random_ids(model), text, tiny_text_encoder.empty(), seeded(0), cond_ids=cond, cond_dropout=0.0
    )
    out.loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("token_embed"):
            continue  # only rows of used ids get gradient; checked below
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.token_embed.weight.grad[model.config.mask_token_id].abs().sum() > 0


def test_pooled_text_path_gets_gradient(tiny_text_encoder):
    torch.manual_seed(0)
    model = MaskedTransformer(TransformerConfig.preset("tiny").replace(use_pooled_text=True))
    text = tiny_text_encoder.encode(["a", "b"])
    model(random_ids(model), text=text).sum().backward()
    assert model.pooled_proj.weight.grad.abs().sum() > 0


def test_cache_matches_direct_forward(tiny_text_encoder):
    model = build(SuperResTransformer, SuperResConfig).eval()
    text = tiny_text_encoder.encode(["a red circle", "a blue square"])
    ids, cond = random_ids(model), low_res_ids(model)
    cache = model.precompute(text, cond)
    assert torch.allclose(model(ids, cache=cache), model(ids, text=text, cond_ids=cond), atol=1e-6)


def test_padding_is_never_attended(tiny_text_encoder):
    model = build(MaskedTransformer, TransformerConfig).eval()
    text = tiny_text_encoder.encode(["a red circle"])
    ids = random_ids(model, batch=1)
    garbage = text.hidden_states.clone()
    garbage[~text.attention_mask] = 1e3
    from musekit.text import TextEmbeddings

    other = TextEmbeddings(garbage, text.pooled, text.attention_mask)
    assert torch.allclose(model(ids, text=text), model(ids, text=other), atol=1e-6)


def test_superres_output_depends_on_low_res_tokens(tiny_text_encoder):
    model = build(SuperResTransformer, SuperResConfig).eval()
    text = tiny_text_encoder.encode(["a red circle"])
    ids = random_ids(model, batch=1)
    a = model(ids, text=text, cond_ids=low_res_ids(model, 1, seed=1))
    b = model(ids, text=text, cond_ids=low_res_ids(model, 1, seed=2))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="low-resolution"):
        model(ids, text=text)


def test_aligned_conditioning_starts_as_a_no_op_and_is_local(tiny_text_encoder):
    """aligned_cond adds a zero-initialised path: the same weights give the same logits; once trained, changing one
    low-resolution token changes the aligned bias only at the high-resolution tokens it covers."""
    plain = build(SuperResTransformer, SuperResConfig).eval()
    aligned = SuperResTransformer(plain.config.replace(aligned_cond=True)).eval()
    missing = set(aligned.state_dict()) - set(plain.state_dict())
    assert missing == {"cond_to_tokens.weight", "cond_to_tokens.bias"}
    aligned.load_state_dict(plain.state_dict(), strict=False)
    text = tiny_text_encoder.encode(["a red circle"])
    ids, cond = random_ids(plain, batch=1), low_res_ids(plain, 1)
    assert torch.allclose(plain(ids, text=text, cond_ids=cond), aligned(ids, text=text, cond_ids=cond), atol=1e-6)
    cache = aligned.precompute(text, cond)
    assert torch.allclose(aligned(ids, cache=cache), aligned(ids, text=text, cond_ids=cond), atol=1e-6)
    torch.nn.init.normal_(aligned.cond_to_tokens.weight)
    c = aligned.config
    scale = c.grid_size // c.cond_grid_size
    other = cond.clone()
    other[0, 1, 2] = (other[0, 1, 2] + 1) % c.cond_codebook_size
    with torch.no_grad():
        blocks, aligned.cond_blocks = aligned.cond_blocks, torch.nn.ModuleList()  # no mixing among low-res tokens
        diff = (aligned.aligned_bias(cond) - aligned.aligned_bias(other)).abs().sum(-1).view(c.grid_size, c.grid_size)
        aligned.cond_blocks = blocks
    changed = (diff > 1e-6).nonzero().tolist()
    assert changed == [[r, col] for r in range(scale, 2 * scale) for col in range(2 * scale, 3 * scale)]


def test_key_text_changes_only_the_key_pathway(tiny_text_encoder):
    model = build(MaskedTransformer, TransformerConfig).eval()
    text = tiny_text_encoder.encode(["a red circle"])
    other = tiny_text_encoder.encode(["a blue square"])
    plain, locked = model.precompute(text), model.precompute(text, key_text=other)
    assert all(torch.equal(a, b) for a, b in zip(plain.values, locked.values))
    assert not any(torch.equal(a, b) for a, b in zip(plain.keys, locked.keys))


def test_bad_inputs_are_errors(tiny_text_encoder):
    model = build(MaskedTransformer, TransformerConfig)
    text = tiny_text_encoder.encode(["a"])
    with pytest.raises(ValueError, match="tokens per image"):
        model(torch.zeros(1, 3, 3, dtype=torch.long), text=text)
    with pytest.raises(ValueError, match="needs `text`"):
        model(random_ids(model, 1))
    wide = build(MaskedTransformer, TransformerConfig, text_dim=8)
    with pytest.raises(ValueError, match="width"):
        wide(random_ids(wide, 1), text=text)


def patched_model(seed=0):
    torch.manual_seed(seed)
    return MaskedTransformer(TransformerConfig.preset("tiny").replace(text_dim=32, patch_size=2))


def test_patches_round_trip_and_group_square_blocks():
    model = patched_model()
    x = torch.randn(2, model.config.seq_len, 3, generator=seeded(0))
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    index = torch.arange(model.config.seq_len, dtype=torch.float32).view(1, -1, 1)
    g = model.config.grid_size
    assert model.patchify(index)[0, 0].tolist() == [0.0, 1.0, float(g), float(g + 1)]  # the top-left 2x2 block


def test_patched_transformer_keeps_per_token_logits(tiny_text_encoder):
    model = patched_model().eval()
    text = tiny_text_encoder.encode(["a red circle", "a blue square"])
    ids = random_ids(model)
    logits = model(ids, text=text)
    assert model.pos_embed.shape[1] == model.config.body_len == model.config.seq_len // 4
    assert logits.shape == (2, model.config.seq_len, model.config.codebook_size)
    # a token only influences the other tokens through attention: changing one changes its own patch's logits
    changed = ids.clone()
    changed[0, 0, 0] = (changed[0, 0, 0] + 1) % model.config.codebook_size
    diff = (model(changed, text=text) - logits).abs().amax(-1)[0].view(model.config.grid_size, -1)
    assert diff[:2, :2].min() > 0


def test_patched_attention_maps_cover_every_token(tiny_text_encoder):
    from musekit.models.attention_maps import cross_attention_maps

    model = patched_model().eval()
    text = tiny_text_encoder.encode(["a red circle"])
    ids = random_ids(model, batch=1)
    maps = cross_attention_maps(model, ids, model.precompute(text))
    assert maps.shape == (1, model.config.seq_len, text.hidden_states.shape[1])
    assert torch.allclose(maps.sum(-1), torch.ones(1, model.config.seq_len), atol=1e-5)
    grid = maps.view(1, model.config.grid_size, model.config.grid_size, -1)
    assert torch.equal(grid[0, 0, 0], grid[0, 1, 1])  # the tokens of one patch share its row


def test_patch_size_must_divide_the_grid():
    from musekit.config import ConfigError

    with pytest.raises(ConfigError, match="patch_size"):
        TransformerConfig.preset("tiny").replace(patch_size=3)


@pytest.mark.parametrize("patch", [1, 2])
def test_logits_at_positions_equal_the_full_logits_there(patch, tiny_text_encoder):
    torch.manual_seed(0)
    model = MaskedTransformer(TransformerConfig.preset("tiny").replace(text_dim=32, patch_size=patch)).eval()
    text = tiny_text_encoder.encode(["a red circle", "a blue square"])
    ids = random_ids(model)
    cache = model.precompute(text)
    positions = torch.tensor([[0, 5, 9], [3, 3, 15]])
    full = model(ids, cache=cache)
    part = model(ids, cache=cache, positions=positions)
    assert torch.allclose(part, full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1])), atol=1e-6)


def test_masked_positions_cover_every_mask_and_scatter_back():
    from musekit.sampling.sampler import masked_positions, scatter_logits

    mask = 9
    ids = torch.tensor([[mask, 1, mask, 2], [3, mask, 4, 5]])
    positions = masked_positions(ids, mask)
    assert positions.shape == (2, 2)
    assert sorted(positions[0].tolist()) == [0, 2] and positions[1, 0].item() == 1
    assert masked_positions(torch.full((2, 4), mask), mask) is None  # a fully masked row needs every logit
    part = torch.randn(2, 2, 7)
    full = scatter_logits(part, positions, 4)
    assert torch.equal(full[0, 0], part[0, 0]) and torch.equal(full[0, 2], part[0, 1])
    assert torch.equal(full[0, 1], torch.zeros(7))


def test_allowed_codes_mask_the_other_logits(tiny_text_encoder):
    from musekit.config import ConfigError

    config = TransformerConfig.preset("tiny")
    allowed = (1, 3, 5)
    torch.manual_seed(0)
    model = MaskedTransformer(config.replace(allowed_codes=allowed)).eval()
    plain = MaskedTransformer(config).eval()
    plain.load_state_dict(model.state_dict())  # the subset is not part of the weights
    ids = torch.full((2, config.grid_size, config.grid_size), config.mask_token_id)
    text = tiny_text_encoder.encode(["a red circle", "a blue star"])
    with torch.no_grad():
        logits, reference = model(ids, text=text), plain(ids, text=text)
    others = [c for c in range(config.codebook_size) if c not in allowed]
    assert torch.equal(logits[..., list(allowed)], reference[..., list(allowed)])
    assert (logits[..., others] < reference[..., others] - 9000).all()
    assert set(logits.argmax(-1).unique().tolist()) <= set(allowed)
    with pytest.raises(ConfigError, match="allowed_codes"):
        config.replace(allowed_codes=(0, config.codebook_size))
