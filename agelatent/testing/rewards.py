"""A reward with every term of ``conf/reward/default.yaml`` at fixed weights, for tests that build envs directly."""

from __future__ import annotations

from agelatent.env.rewards import AgeProgress, IdentityPenalty, LatentPrior, Reward, StepCost, SuccessBonus

__all__ = ["all_terms_reward"]


def all_terms_reward(soft_threshold: float = 0.6) -> Reward:
    return Reward(
        {
            "age_progress": AgeProgress(1.0, 5.0),
            "identity": IdentityPenalty(1.0, soft_threshold),
            "latent_prior": LatentPrior(1.0, 0.1),
            "step_cost": StepCost(1.0, 0.05),
            "success": SuccessBonus(2.0),
        }
    )
