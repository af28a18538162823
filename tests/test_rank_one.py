"""Invariants of the gated rank-one edit (Perfusion Eq. 3 and its multi-concept forms)."""

import pytest
import torch
from torch import nn

from musekit.personalize.rank_one import ConceptTarget, RankOneEdit

D_IN, D_OUT = 12, 8


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(D_IN, D_OUT)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(D_OUT, D_IN, generator=g))
        linear.bias.copy_(torch.randn(D_OUT, generator=g))
    a = torch.randn(D_IN, D_IN, generator=g, dtype=torch.float64)
    c = a @ a.t() + D_IN * torch.eye(D_IN, dtype=torch.float64)
    e = torch.randn(2, 5, D_IN, generator=g)
    return linear, c, e, g


class SGate(RankOneEdit):
    """The edit with the sigmoid gate replaced by s itself (the ungated ROME update)."""

    def forward(self, e):
        s = self.coefficients(e.double())[..., 0:1]
        c = self.concepts[0]
        out = (e.double() - s * c.target_input.double()) @ self.linear.weight.double().t() + self.linear.bias.double()
        return (out + s * c.target_output.double()).to(e.dtype)


def test_ungated_edit_with_o_equal_w_i_is_the_identity():
    linear, c, e, g = setup()
    i_star = torch.randn(D_IN, generator=g)
    o_star = linear.weight @ i_star
    edit = SGate(linear, torch.linalg.inv(c), [ConceptTarget(i_star, o_star)])
    assert torch.allclose(edit(e), linear(e), atol=1e-5)


def test_s_of_target_input_is_one_and_scaling_c_changes_nothing():
    linear, c, e, g = setup()
    i_star = torch.randn(D_IN, generator=g)
    concept = ConceptTarget(i_star, torch.randn(D_OUT, generator=g), beta=0.6, tau=0.2)
    edit = RankOneEdit(linear, torch.linalg.inv(c), [concept])
    assert edit.coefficients(i_star[None].double()).item() == pytest.approx(1.0)
    scaled = RankOneEdit(linear, torch.linalg.inv(c * 37.5), [concept])
    assert torch.allclose(edit(e), scaled(e), atol=1e-5)


def test_exact_multi_concept_form_with_one_concept_equals_the_single_form():
    linear, c, e, g = setup()
    concept = ConceptTarget(torch.randn(D_IN, generator=g), torch.randn(D_OUT, generator=g))
    single = RankOneEdit(linear, torch.linalg.inv(c), [concept], exact=False)(e)
    edit = RankOneEdit(linear, torch.linalg.inv(c), [concept], exact=True)
    x = e.double()
    basis = edit.projector_basis()
    exact_residual = x - (x @ edit.c_inv @ basis.t()) @ basis  # the multi-concept projector, N = 1
    s = edit.coefficients(x)
    assert torch.allclose(exact_residual, x - s * concept.target_input.double(), atol=1e-9)
    assert torch.allclose(edit(e), single, atol=1e-5)


def test_exact_and_approximate_agree_for_c_inverse_orthogonal_targets_only():
    linear, c, e, g = setup()
    c_inv = torch.linalg.inv(c)
    i1 = torch.randn(D_IN, generator=g, dtype=torch.float64)
    i2 = torch.randn(D_IN, generator=g, dtype=torch.float64)
    i2_orth = i2 - (i1 @ c_inv @ i2) / (i1 @ c_inv @ i1) * i1  # C^-1-orthogonal to i1
    outs = [torch.randn(D_OUT, generator=g) for _ in range(2)]
    for second, agree in ((i2_orth, True), (i2, False)):
        concepts = [ConceptTarget(i1.float(), outs[0]), ConceptTarget(second.float(), outs[1], beta=0.5)]
        exact = RankOneEdit(linear, c_inv, concepts, exact=True)(e)
        approx = RankOneEdit(linear, c_inv, concepts, exact=False)(e)
        assert torch.allclose(exact, approx, atol=1e-4) == agree


def test_exact_projector_removes_the_span_of_the_targets():
    linear, c, _, g = setup()
    targets = [torch.randn(D_IN, generator=g) for _ in range(3)]
    edit = RankOneEdit(linear, torch.linalg.inv(c), [ConceptTarget(t, torch.zeros(D_OUT)) for t in targets])
    basis = edit.projector_basis()
    for t in targets:
        x = t.double()
        assert torch.allclose(x - (x @ edit.c_inv @ basis.t()) @ basis, torch.zeros_like(x), atol=1e-9)


def test_key_locked_concept_key_is_the_gate_scaled_superclass_key():
    linear, c, _, g = setup()
    i_star, e_super = torch.randn(D_IN, generator=g), torch.randn(D_IN, generator=g)
    beta, tau = 0.75, 0.1
    edit = RankOneEdit(linear, torch.linalg.inv(c), [ConceptTarget(i_star, linear.weight @ e_super, beta, tau)])
    key = edit(i_star[None, None])[0, 0]
    gate = torch.sigmoid(torch.tensor((1.0 - beta) / tau))
    assert torch.allclose(key - linear.bias, gate * (linear.weight @ e_super), atol=1e-5)


def test_beta_and_tau_change_at_inference_without_retraining():
    linear, c, _, g = setup()
    i_star, o_star = torch.randn(D_IN, generator=g), torch.randn(D_OUT, generator=g)
    concept = ConceptTarget(i_star, o_star, beta=0.75, tau=0.1)
    edit = RankOneEdit(linear, torch.linalg.inv(c), [concept])
    x = (0.8 * i_star)[None, None]
    strong = edit(x)
    concept.beta = 0.4  # lower bias: more of the concept
    weaker_bias = edit(x)
    base = (x - 0.8 * i_star) @ linear.weight.t() + linear.bias
    assert (weaker_bias - base).norm() > (strong - base).norm()


def test_per_sample_targets_and_dtype():
    linear, c, e, g = setup()
    per_sample = torch.randn(2, D_OUT, generator=g)
    edit = RankOneEdit(linear, torch.linalg.inv(c), [ConceptTarget(torch.randn(D_IN, generator=g), per_sample)])
    out = edit(e)
    assert out.shape == (2, 5, D_OUT) and out.dtype == torch.float32
