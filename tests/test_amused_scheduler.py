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


def test_inverse_cdf_draws_follow_the_softmax():
    from musekit.sampling.amused_scheduler import inverse_cdf_draws

    target = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = target.log().expand(40_000, 4)  # the last category has probability 0
    drawn, chosen = inverse_cdf_draws(logits, torch.Generator().manual_seed(0))
    frequency = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert torch.allclose(frequency, target, atol=0.01)
    assert frequency[3] == 0
    assert torch.allclose(chosen, target[drawn])


def test_inverse_cdf_draws_keep_the_schedule_and_the_known_tokens():
    mask_id, codebook, side, steps = 40, 40, 6, 8
    schedulers = {draws: AmusedScheduler(mask_id, draws=draws) for draws in ("multinomial", "inverse-cdf")}
    ids = {}
    for draws, scheduler in schedulers.items():
        scheduler.set_timesteps(steps)
        current, generator, masked = torch.full((2, side, side), mask_id), torch.Generator().manual_seed(3), []
        for k, t in enumerate(scheduler.timesteps):
            logits = torch.randn(2, side * side, codebook, generator=torch.Generator().manual_seed(100 + k))
            new = scheduler.step(logits, t, current, generator=generator).prev_ids
            known = current != mask_id
            assert torch.equal(new[known], current[known])  # decided tokens never change
            current = new
            masked.append(int((current == mask_id).sum()))
        ids[draws] = (current, masked)
    assert ids["multinomial"][1] == ids["inverse-cdf"][1]  # the same number left masked after every step
    assert ids["inverse-cdf"][1][-1] == 0
    assert not torch.equal(ids["multinomial"][0], ids["inverse-cdf"][0])  # another random stream


def test_unknown_draws_are_a_clear_error():
    from musekit.config import ConfigError, SchedulerConfig

    with pytest.raises(ValueError, match="draws must be one of"):
        AmusedScheduler(3, draws="gumbel")
    with pytest.raises(ConfigError, match="draws is multinomial or inverse-cdf"):
        SchedulerConfig(kind="amused", draws="gumbel")
