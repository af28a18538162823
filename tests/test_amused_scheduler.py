"""musekit's AmusedScheduler reproduces diffusers' AmusedScheduler token for token."""

import pytest
import torch

from musekit.sampling.amused_scheduler import AmusedScheduler

diffusers = pytest.importorskip("diffusers", reason="parity tests need the diffusers test extra")


@pytest.mark.parametrize(
    "schedule, steps, temperature", [("cosine", 12, (2, 0)), ("linear", 5, 3.0), ("cosine", 1, (2, 0))]
)
def test_same_ids_as_diffusers_at_every_step(schedule, steps, temperature):
    mask_id, codebook, side = 40, 40, 6
    ours, ref = AmusedScheduler(mask_id, schedule), diffusers.AmusedScheduler(mask_token_id=mask_id,
                                                                              masking_schedule=schedule)  # fmt: skip
    ours.set_timesteps(steps, temperature)
    ref.set_timesteps(steps, temperature)
    a = b = torch.full((2, side, side), mask_id)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for k, t in enumerate(ref.timesteps):
        logits = torch.randn(2, codebook, side, side, generator=torch.Generator().manual_seed(100 + k))
        b = ref.step(logits, t, b, generator=g2).prev_sample
        a = ours.step(logits.flatten(2).transpose(1, 2), t, a, generator=g1).prev_ids
        assert torch.equal(a, b), f"step {k}"
    assert not (a == mask_id).any()
