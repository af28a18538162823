import math

import pytest
import torch

from musekit.config import SchedulerConfig
from musekit.sampling import MaskGITScheduler, apply_guidance, guidance_scale_at, mask_ratio
from musekit.sampling.scheduler import sample_categorical

from .conftest import seeded

MASK = 16  # codebook of 16, mask id 16


def run_schedule(length, steps, start=None, schedule="cosine", seed=0, top_k=None, codebook=16):
    scheduler = MaskGITScheduler(codebook, SchedulerConfig(mask_schedule=schedule))
    scheduler.set_timesteps(steps)
    ids = start.clone() if start is not None else torch.full((2, length), codebook)
    generator = seeded(seed)
    logits = torch.randn(2, ids.shape[1], codebook, generator=seeded(seed + 100))
    counts, history = [], [ids]
    for t in scheduler.timesteps:
        ids = scheduler.step(logits, t, ids, generator=generator, top_k=top_k).prev_ids
        counts.append((ids == codebook).sum(1).tolist())
        history.append(ids)
    return counts, history


def test_reference_counts_256_tokens_12_steps():
    # floor(256 * cos(pi/2 * (k+1)/12)), clamped to [1, U_k - 1]; 0 after the last step.
    counts, _ = run_schedule(256, 12, codebook=1024)
    expected = [253, 247, 236, 221, 203, 181, 155, 128, 97, 66, 33, 0]
    assert [c[0] for c in counts] == expected and [c[1] for c in counts] == expected
    assert expected == [min(math.floor(256 * math.cos(math.pi / 2 * (k + 1) / 12)), 255) for k in range(11)] + [0]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "arccos", "pow"])
@pytest.mark.parametrize("steps", [1, 2, 5, 12, 24])
def test_masked_count_falls_monotonically_to_zero(schedule, steps):
    counts, _ = run_schedule(64, steps, schedule=schedule)
    per_sample = list(zip(*counts))
    for seq in per_sample:
        assert all(a >= b for a, b in zip(seq, seq[1:]))
        assert seq[-1] == 0
        if steps > 1:
            assert seq[0] < 64  # every step commits at least one token


def test_known_tokens_never_change_and_counts_are_relative_to_initial_unknown():
    start = torch.randint(0, MASK, (2, 64), generator=seeded(3))
    start[:, :16] = MASK  # 16 unknown tokens at the start
    counts, history = run_schedule(64, 4, start=start)
    known = start != MASK
    for ids in history:
        assert torch.equal(ids[known], start[known])
    # relative to U0 = 16: floor(16 * cos(pi/2 * k/4)) for k = 1, 2, 3, then 0
    assert [c[0] for c in counts] == [14, 11, 6, 0]


def test_same_generator_same_ids_and_seed_matters():
    _, a = run_schedule(64, 6, seed=1)
    _, b = run_schedule(64, 6, seed=1)
    _, c = run_schedule(64, 6, seed=2)
    assert torch.equal(a[-1], b[-1]) and not torch.equal(a[-1], c[-1])


def test_top_k_restricts_sampled_values():
    scheduler = MaskGITScheduler(MASK)
    scheduler.set_timesteps(1)
    logits = torch.randn(1, 500, MASK, generator=seeded(0))
    ids = torch.full((1, 500), MASK)
    out = scheduler.step(logits, scheduler.timesteps[0], ids, generator=seeded(1), top_k=2).pred_ids
    top2 = logits.topk(2, dim=-1).indices
    assert (out.unsqueeze(-1) == top2).any(-1).all()


def test_sampling_draws_from_the_softmax():
    # the Gumbel-max draw with one logarithm per entry samples softmax(logits): frequencies over 40,000 rows
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    log_probs = probs.log().expand(40_000, 4)
    counts = torch.bincount(sample_categorical(log_probs, seeded(3)), minlength=4).double() / 40_000
    assert torch.allclose(counts, probs.double(), atol=0.01)


def test_only_masked_positions_are_sampled_and_decided_tokens_kept():
    # logits at decided positions are ignored (the sampler may pass anything there); decided tokens never change
    scheduler = MaskGITScheduler(MASK)
    scheduler.set_timesteps(4)
    ids = torch.full((2, 40), MASK)
    ids[:, ::3] = 5
    logits = torch.randn(2, 40, MASK, generator=seeded(0))
    noisy = logits.clone()
    noisy[ids != MASK] = torch.nan
    a = scheduler.step(logits, scheduler.timesteps[0], ids, generator=seeded(1))
    scheduler.set_timesteps(4)
    b = scheduler.step(noisy, scheduler.timesteps[0], ids, generator=seeded(1))
    assert torch.equal(a.pred_ids, b.pred_ids) and torch.equal(a.prev_ids, b.prev_ids)
    assert (a.pred_ids[:, ::3] == 5).all() and (a.prev_ids[:, ::3] == 5).all()


def test_temperature_annealing_and_validation():
    scheduler = MaskGITScheduler(MASK)
    scheduler.set_timesteps(5, temperature=3.0)
    assert scheduler.temperatures[0] == 3.0 and scheduler.temperatures[-1] == 0.0
    with pytest.raises(ValueError):
        scheduler.set_timesteps(0)
    with pytest.raises(ValueError):
        scheduler.set_timesteps(3, temperature=-1.0)


def test_mask_schedule_table():
    for name in ("cosine", "linear", "arccos", "pow"):
        assert mask_ratio(0.0, name) == pytest.approx(1.0)
        assert mask_ratio(1.0, name) == pytest.approx(0.0, abs=1e-7)
        values = mask_ratio(torch.linspace(0, 1, 50), name)
        assert (values[1:] <= values[:-1] + 1e-12).all()
    with pytest.raises(ValueError):
        mask_ratio(0.5, "zigzag")


def test_guidance_forms():
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert apply_guidance(u, c, 1.0).item() == 3.0
    assert apply_guidance(u, c, 0.0).item() == 1.0
    # Muse's (1 + t) c - t u with t = s - 1
    assert apply_guidance(u, c, 4.0).item() == pytest.approx((1 + 3) * 3.0 - 3 * 1.0)
    assert guidance_scale_at(0, 10, 5.0, "linear") == 1.0
    assert guidance_scale_at(9, 10, 5.0, "linear") == 5.0
    assert guidance_scale_at(3, 10, 5.0, "constant") == 5.0


def test_revising_step_masks_again_the_least_confident_of_all_tokens():
    # image-to-image: known tokens the logits disfavour are masked again, n_k still counted from U0
    scheduler = MaskGITScheduler(MASK)
    scheduler.set_timesteps(4, temperature=0.0)
    ids = torch.full((1, 32), 3)
    ids[:, :8] = MASK  # U0 = 8
    logits = torch.zeros(1, 32, MASK)
    logits[..., 3], logits[..., 7] = -10.0, 5.0
    out = scheduler.step(logits, scheduler.timesteps[0], ids, generator=seeded(0), revise=True)
    remasked = out.prev_ids == MASK
    assert int(remasked.sum()) == math.floor(8 * math.cos(math.pi / 8))  # 7
    assert (ids[remasked] == 3).all() and (out.prev_ids[:, :8] == 7).all()
    assert (out.pred_ids[:, :8] == 7).all() and (out.pred_ids[:, 8:] == 3).all()
    # the same step without revise keeps every known token
    scheduler.set_timesteps(4, temperature=0.0)
    kept = scheduler.step(logits, scheduler.timesteps[0], ids, generator=seeded(0)).prev_ids
    assert (kept[:, 8:] == 3).all()


def test_revising_decode_follows_the_schedule_and_ends_with_no_mask():
    scheduler = MaskGITScheduler(MASK)
    scheduler.set_timesteps(4)
    start = torch.randint(0, MASK, (2, 64), generator=seeded(3))
    start[0, :16] = MASK  # U0 = 16 in row 0, 0 in row 1: a row with nothing masked is never touched
    logits = torch.randn(2, 64, MASK, generator=seeded(4))
    ids, counts = start, []
    for t in scheduler.timesteps:
        ids = scheduler.step(logits, t, ids, generator=seeded(int(t)), revise=True).prev_ids
        counts.append((ids == MASK).sum(1).tolist())
    assert [c[0] for c in counts] == [14, 11, 6, 0] and all(c[1] == 0 for c in counts)
    assert torch.equal(ids[1], start[1]) and not (ids == MASK).any()
    changed = ids[0, 16:] != start[0, 16:]
    assert changed.any()  # known tokens were redrawn where the logits disfavour them


def test_revising_step_noise_only_on_draws_and_top_k_scores_kept_tokens():
    # kept tokens are ranked by their log-probability alone: among nearly tied kept tokens the least likely is the
    # one masked again at every seed (with the noise on them too, the choice would wander with the seed)
    ids = torch.full((1, 32), 3)
    ids[:, 0] = MASK  # U0 = 1: one token is masked again after the first step
    logits = torch.zeros(1, 32, MASK)
    logits[:, 0, 5] = 30.0  # the draw is certain
    logits[:, 1:, 3] = -0.01 * torch.arange(1, 32)  # kept tokens nearly tied, position 31 the least likely
    scheduler = MaskGITScheduler(MASK)
    for seed in range(20):
        scheduler.set_timesteps(4, temperature=0.5)  # noise of about 0.6: far above the ties, far below 3
        out = scheduler.step(logits, scheduler.timesteps[0], ids, generator=seeded(seed), revise=True)
        assert (out.prev_ids == MASK).nonzero()[:, 1].tolist() == [31]
    # under top_k a kept token outside the k most likely codes scores -inf and is masked first
    ids = torch.full((1, 32), 3)
    ids[:, :16] = MASK
    logits = torch.randn(1, 32, MASK, generator=seeded(1))
    logits[:, 16:, 3] = -30.0
    scheduler.set_timesteps(4, temperature=0.0)
    out = scheduler.step(logits, scheduler.timesteps[0], ids, generator=seeded(0), top_k=2, revise=True)
    remasked = (out.prev_ids == MASK).nonzero()[:, 1]
    assert len(remasked) == math.floor(16 * math.cos(math.pi / 8)) and (remasked >= 16).all()
