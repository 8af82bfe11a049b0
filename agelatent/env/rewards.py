"""Reward terms of the latent age-editing MDP. Each term is a small class with a weight; the reward is
their weighted sum, composed from the Hydra ``reward/`` group (ablate a term by removing it or zeroing it).

Every term maps a batched :class:`Transition` to ``[B]`` and is unitless by construction (years are divided
by a scale), so weights are comparable across terms. The terms' constructors take keyword arguments only
and have no defaults: their values live in ``conf/reward/`` (build with :meth:`Reward.from_config`). A new
term is a :class:`RewardTerm` subclass anywhere on the Python path, added with
``+reward.terms.<name>={_target_: my_module.MyTerm, weight: ...}`` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Transition:
    """What the reward may look at for one batched step (all ``[B]`` unless noted)."""

    ages_before: torch.Tensor
    ages_after: torch.Tensor
    targets: torch.Tensor
    similarity: torch.Tensor  # identity similarity of the new face to the episode's start face
    p_male: torch.Tensor  # P(male) of the new face
    start_p_male: torch.Tensor  # P(male) of the episode's start face
    latents_after: torch.Tensor  # [B, d]
    latent_radius: (
        torch.Tensor
    )  # [B, blocks]: the new latent's distance from the typical set's centre / radius
    step_norm: torch.Tensor  # ‖Δz‖ of the action taken
    success: torch.Tensor  # bool
    identity_lost: torch.Tensor  # bool: similarity fell below the hard bound


class RewardTerm:
    """Base class: ``weight * value(transition)``."""

    def __init__(self, *, weight: float) -> None:
        if not torch.isfinite(torch.tensor(float(weight))):
            raise ValueError(f"{type(self).__name__}.weight must be finite, got {weight}")
        self.weight = float(weight)

    def value(self, t: Transition) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, t: Transition) -> torch.Tensor:
        return self.weight * self.value(t)


class AgeProgress(RewardTerm):
    """Reduction of the distance to the target age this step, in units of ``scale_years``."""

    def __init__(self, *, weight: float, scale_years: float) -> None:
        super().__init__(weight=weight)
        if not scale_years > 0:
            raise ValueError(f"AgeProgress.scale_years must be > 0, got {scale_years}")
        self.scale_years = scale_years

    def value(self, t: Transition) -> torch.Tensor:
        before = (t.ages_before - t.targets).abs()
        after = (t.ages_after - t.targets).abs()
        return (before - after) / self.scale_years


class IdentityPenalty(RewardTerm):
    """How far identity similarity is below the soft threshold (0 above it), plus ``loss_penalty`` once
    the hard bound is crossed (the episode then ends)."""

    def __init__(self, *, weight: float, soft_threshold: float, loss_penalty: float) -> None:
        super().__init__(weight=weight)
        self.soft_threshold = soft_threshold
        self.loss_penalty = loss_penalty

    def value(self, t: Transition) -> torch.Tensor:
        shortfall = (self.soft_threshold - t.similarity).clamp_min(0) / max(self.soft_threshold, 1e-6)
        return -(shortfall + self.loss_penalty * t.identity_lost.float())


class LatentPrior(RewardTerm):
    """Penalise leaving the prior's typical set: |ρ − 1| beyond a tolerance, with ρ the latent's distance from
    the typical set's centre in units of its radius (``World.typical_set()``; mean over blocks). With the
    env's clamp on (``env.typical_set``) and the same tolerance it is always 0: it is the soft prior of runs
    that turn the clamp off."""

    def __init__(self, *, weight: float, tolerance: float) -> None:
        super().__init__(weight=weight)
        self.tolerance = tolerance

    def value(self, t: Transition) -> torch.Tensor:
        return -((t.latent_radius - 1).abs() - self.tolerance).clamp_min(0).mean(-1)


class StepCost(RewardTerm):
    """A constant cost per step (prefer short edits) plus a cost on the step's latent norm."""

    def __init__(self, *, weight: float, per_step: float, per_unit_norm: float) -> None:
        super().__init__(weight=weight)
        self.per_step = per_step
        self.per_unit_norm = per_unit_norm

    def value(self, t: Transition) -> torch.Tensor:
        return -(self.per_step + self.per_unit_norm * t.step_norm)


class SuccessBonus(RewardTerm):
    """1 when the face reaches the target age (within tolerance) with identity kept."""

    def value(self, t: Transition) -> torch.Tensor:
        return t.success.float()


class GenderDrift(RewardTerm):
    """How far P(male) has moved from the episode's start face (negative): gender is part of who a person is,
    and the walk's first-order constraint on it leaves the policy's corrections free to flip it."""

    def value(self, t: Transition) -> torch.Tensor:
        return -(t.p_male - t.start_p_male).abs()


class Reward:
    """The weighted sum of named terms; ``components`` gives each term's contribution for logging."""

    def __init__(self, terms: Mapping[str, RewardTerm]) -> None:
        if not terms:
            raise ValueError("reward needs at least one term (reward.terms is empty)")
        self.terms = {name: term for name, term in terms.items() if term is not None}

    @classmethod
    def zero(cls) -> Reward:
        """A reward of 0 for every transition: for envs that only move editors, judged by metrics."""
        reward = cls.__new__(cls)
        reward.terms = {}
        return reward

    @classmethod
    def from_config(cls, reward_cfg) -> Reward:
        """From the ``reward`` group: each entry of ``terms`` is instantiated from its ``_target_`` (a term
        set to null is dropped); a bad term's own message is reported with its config path."""
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        terms = {}
        for name, term in (reward_cfg.terms or {}).items():
            if term is None:
                continue
            try:
                terms[name] = instantiate(term)
            except InstantiationException as err:  # the term's own message, not Hydra's wrapper
                cause = err.__cause__ or err
                raise ValueError(f"reward.terms.{name}: {cause}") from err
        return cls(terms)

    def components(self, t: Transition) -> dict[str, torch.Tensor]:
        return {name: term(t) for name, term in self.terms.items()}

    def __call__(self, t: Transition) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = self.components(t)
        if not parts:
            return torch.zeros_like(t.ages_after), parts
        return torch.stack(list(parts.values())).sum(dim=0), parts
