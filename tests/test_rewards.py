"""Reward terms called directly on hand-made transitions: each term's value is what its docstring says."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_config

from agelatent.env.rewards import (
    AgeProgress,
    IdentityPenalty,
    LatentPrior,
    Reward,
    StepCost,
    SuccessBonus,
    Transition,
)


def transition(**fields) -> Transition:
    """Three rows: closing in on the target, overshooting it, and losing identity."""
    base = dict(
        ages_before=torch.tensor([30.0, 50.0, 40.0]),
        ages_after=torch.tensor([35.0, 70.0, 41.0]),
        targets=torch.tensor([40.0, 60.0, 60.0]),
        similarity=torch.tensor([0.9, 0.55, 0.3]),
        p_male=torch.tensor([0.5, 0.6, 0.9]),
        start_p_male=torch.tensor([0.5, 0.5, 0.1]),
        latents_after=torch.zeros(3, 4),
        latent_radius=torch.tensor([[1.0], [1.05], [1.3]]),
        step_norm=torch.tensor([0.5, 1.0, 2.0]),
        success=torch.tensor([False, False, False]),
        identity_lost=torch.tensor([False, False, True]),
    )
    return Transition(**(base | fields))


def test_age_progress_is_the_distance_to_the_target_closed_in_scale_units():
    term = AgeProgress(weight=2.0, scale_years=5.0)
    # 10 -> 5 years away: +1; 10 -> 10 (overshot by as much as it was short): 0; 20 -> 19: +0.2
    torch.testing.assert_close(term.value(transition()), torch.tensor([1.0, 0.0, 0.2]))
    torch.testing.assert_close(term(transition()), torch.tensor([2.0, 0.0, 0.4]))


def test_identity_penalty_grows_below_the_soft_threshold_and_adds_the_loss_penalty_past_the_bound():
    term = IdentityPenalty(weight=1.0, soft_threshold=0.6, loss_penalty=3.0)
    expected = torch.tensor([0.0, -(0.05 / 0.6), -(0.3 / 0.6) - 3.0])
    torch.testing.assert_close(term.value(transition()), expected)


def test_latent_prior_is_zero_inside_the_tolerance_and_linear_outside():
    term = LatentPrior(weight=1.0, tolerance=0.1)
    torch.testing.assert_close(term.value(transition()), torch.tensor([0.0, 0.0, -0.2]))
    per_layer = transition(latent_radius=torch.tensor([[1.0, 1.3], [1.0, 1.0], [0.7, 1.3]]))
    torch.testing.assert_close(term.value(per_layer), torch.tensor([-0.1, 0.0, -0.2]))  # mean over blocks


def test_step_cost_and_success_bonus():
    torch.testing.assert_close(
        StepCost(weight=1.0, per_step=0.05, per_unit_norm=0.1).value(transition()),
        torch.tensor([-0.1, -0.15, -0.25]),
    )
    won = transition(success=torch.tensor([True, False, False]))
    torch.testing.assert_close(SuccessBonus(weight=2.0)(won), torch.tensor([2.0, 0.0, 0.0]))


def test_the_configured_reward_is_the_weighted_sum_of_its_terms_and_a_bad_term_is_named():
    reward = Reward.from_config(cpu_config("train").reward)
    total, parts = reward(transition())
    assert set(parts) == {"age_progress", "identity", "latent_prior", "step_cost", "success"}
    torch.testing.assert_close(total, torch.stack(list(parts.values())).sum(0))
    with pytest.raises(ValueError, match=r"reward.terms.age_progress: AgeProgress.scale_years must be > 0"):
        Reward.from_config(cpu_config("train", "reward.terms.age_progress.scale_years=0").reward)


def test_the_latent_prior_tolerance_is_the_clamps():
    cfg = cpu_config("train", "env.typical_set_tolerance=0.2")
    assert Reward.from_config(cfg.reward).terms["latent_prior"].tolerance == 0.2


def test_gender_drift_prices_how_far_p_male_moved_from_the_start():
    from agelatent.env.rewards import GenderDrift

    t = transition(p_male=torch.tensor([0.9, 0.2, 0.5]), start_p_male=torch.tensor([0.9, 0.8, 0.4]))
    torch.testing.assert_close(GenderDrift(weight=2.0)(t), torch.tensor([0.0, -1.2, -0.2]))
