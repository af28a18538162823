"""The aMUSEd scheduler's inverse-CDF token draws: the softmax's distribution, the same schedule, clear errors."""

import pytest
import torch

from musekit.config import ConfigError, SchedulerConfig
from musekit.sampling.amused_scheduler import AmusedScheduler, inverse_cdf_draws


def test_inverse_cdf_draws_follow_the_softmax():
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
    with pytest.raises(ValueError, match="draws must be one of"):
        AmusedScheduler(3, draws="gumbel")
    with pytest.raises(ConfigError, match="draws must be one of"):
        SchedulerConfig(kind="amused", draws="gumbel")


def test_inverse_cdf_draws_refuse_nan_logits():
    logits = torch.zeros(3, 5)
    logits[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        inverse_cdf_draws(logits, torch.Generator().manual_seed(0))


def test_a_pipeline_with_the_amused_scheduler_decodes_with_inverse_cdf_draws(tiny_pipe):
    tiny_pipe.scheduler_config = tiny_pipe.scheduler_config.replace(kind="amused", draws="inverse-cdf")
    run = lambda: tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="ids").ids  # noqa: E731
    ids = run()
    assert torch.equal(ids, run())
    assert not (ids == tiny_pipe.transformer.config.mask_token_id).any()
