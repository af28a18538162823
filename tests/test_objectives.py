import math

import pytest
import torch

from musekit.config import TransformerConfig
from musekit.models import MaskedTransformer
from musekit.text.base import TextEmbeddings
from musekit.training import drop_conditioning, mask_tokens, masked_modeling_loss, masked_token_loss

from .conftest import seeded


def test_exact_mask_counts_at_least_one():
    ids = torch.zeros(4, 100, dtype=torch.long)
    ratios = torch.tensor([0.0, 0.004, 0.5, 1.0])
    inputs, mask = mask_tokens(ids, 7, seeded(0), ratios=ratios)
    assert mask.sum(1).tolist() == [1, 1, 50, 100]
    assert torch.equal(inputs == 7, mask)


def test_mean_masking_rate_is_two_over_pi():
    ids = torch.zeros(20000, 64, dtype=torch.long)
    _, mask = mask_tokens(ids, 1, seeded(0))
    assert mask.float().mean().item() == pytest.approx(2 / math.pi, abs=0.01)


def test_loss_only_on_masked_positions():
    logits = torch.randn(2, 10, 5, generator=seeded(0))
    targets = torch.randint(0, 5, (2, 10), generator=seeded(1))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :3] = True
    changed = logits.clone()
    changed[:, 3:] = torch.randn(2, 7, 5)
    assert masked_token_loss(logits, targets, mask) == masked_token_loss(changed, targets, mask)
    expected = torch.nn.functional.cross_entropy(logits[:, :3].reshape(-1, 5), targets[:, :3].reshape(-1))
    assert torch.allclose(masked_token_loss(logits, targets, mask), expected)


def test_token_weights_make_a_weighted_mean():
    logits = torch.randn(2, 10, 5, generator=seeded(0))
    targets = torch.randint(0, 5, (2, 10), generator=seeded(1))
    mask = torch.ones(2, 10, dtype=torch.bool)
    assert torch.allclose(masked_token_loss(logits, targets, mask, weights=torch.ones(2, 10)),
                          masked_token_loss(logits, targets, mask))  # fmt: skip
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1), reduction="none")
    weights = torch.ones(2, 10)
    weights[:, :2] = 5.0
    expected = (per_token * weights.flatten()).sum() / weights.sum()
    assert torch.allclose(masked_token_loss(logits, targets, mask, weights=weights), expected)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_measured_conditioning_dropout_rate(p, tiny_text_encoder):
    text = tiny_text_encoder.encode(["a red circle"]).expand(20000)
    empty = tiny_text_encoder.empty()
    dropped_text, keep = drop_conditioning(text, empty, p, seeded(0))
    dropped = (~keep).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.01)  # p is the probability of DROPPING the text
    is_empty = (dropped_text.hidden_states == empty.hidden_states).all(-1).all(-1)
    assert torch.equal(is_empty, ~keep)
    with pytest.raises(ValueError):
        drop_conditioning(text, empty, 1.5)


def test_tiny_model_overfits_one_batch(tiny_text_encoder):
    torch.manual_seed(0)
    model = MaskedTransformer(TransformerConfig.preset("tiny").replace(hidden_size=64, num_layers=2, num_heads=4))
    prompts = ["a red circle", "a blue square", "a green star", "a white heart"]
    text = tiny_text_encoder.encode(prompts)
    empty = tiny_text_encoder.empty()
    ids = torch.randint(0, 16, (4, 4, 4), generator=seeded(0))

    def evaluate():
        with torch.no_grad():
            return masked_modeling_loss(model, ids, text, empty, seeded(123), cond_dropout=0.0).loss.item()

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = seeded(1)
    for _ in range(300):
        loss = masked_modeling_loss(model, ids, text, empty, generator, cond_dropout=0.0).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert after <= 0.1 * before, (before, after)


class InputSpy(torch.nn.Module):
    """A stand-in transformer that records its inputs and predicts nothing."""

    config = TransformerConfig.preset("tiny")

    def __init__(self):
        super().__init__()
        self.inputs = None

    def forward(self, inputs, text=None, cond_ids=None):
        self.inputs = inputs
        return torch.zeros(*inputs.shape, self.config.codebook_size, requires_grad=True)


def spy_batch():
    """Tokens (3, 4, 4), prompt embeddings and the empty prompt for ``InputSpy``."""
    ids = torch.randint(0, InputSpy.config.codebook_size, (3, 4, 4), generator=seeded(0))
    text = TextEmbeddings(torch.randn(3, 5, 8), torch.randn(3, 8), torch.ones(3, 5, dtype=torch.bool))
    empty = TextEmbeddings(torch.randn(1, 5, 8), torch.randn(1, 8), torch.ones(1, 5, dtype=torch.bool))
    return ids, text, empty


def test_context_ids_replace_the_unmasked_inputs_only():
    """The model sees ``context_ids`` where tokens are not masked, [MASK] where they are; targets stay ``ids``."""
    model, mask_id = InputSpy(), InputSpy.config.mask_token_id
    ids, text, empty = spy_batch()
    context = (ids + 1) % InputSpy.config.codebook_size
    masked_modeling_loss(model, ids, text, empty, seeded(1), cond_dropout=0.0, context_ids=context)
    expected_mask = mask_tokens(ids, mask_id, seeded(1))[1]  # the same generator draws the same mask first
    assert torch.equal(model.inputs == mask_id, expected_mask)
    assert torch.equal(model.inputs[~expected_mask], context.flatten(1)[~expected_mask])


def test_given_ratios_set_each_samples_masked_count():
    """``ratios`` fixes how many tokens of each sample are masked (the start-context cap of the training loop)."""
    model = InputSpy()
    ids, text, empty = spy_batch()
    ratios = torch.tensor([0.25, 0.5, 1.0])
    out = masked_modeling_loss(model, ids, text, empty, seeded(1), cond_dropout=0.0, ratios=ratios)
    assert (model.inputs == InputSpy.config.mask_token_id).sum(1).tolist() == [4, 8, 16]
    assert out.mask_fraction.item() == pytest.approx(28 / 48)
