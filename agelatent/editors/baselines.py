"""Baseline editors: the local-linear walk, an InterFaceGAN-style global direction, white-box gradient
optimisation of the latent, and a random walk (the floor). See :mod:`agelatent.editors.base`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from agelatent.editors.base import Editor
from agelatent.env.latent_age import KEEPABLE, ActionConfig, LatentAgeEnv
from agelatent.env.local_linear import min_norm_step
from agelatent.world.directions import fit_global_direction, semantic_basis

__all__ = [
    "GlobalDirection",
    "GradientDescent",
    "LeverWalk",
    "LocalLinearWalk",
    "RandomWalk",
    "SemanticWalk",
    "fit_global_direction",
]


def _wanted_years(env: LatentAgeEnv, max_years: float) -> torch.Tensor:
    return (env.targets - env.ages).clamp(-max_years, max_years)


def _positive(**values: float) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not (
            isinstance(value, int | float) and math.isfinite(value) and value > 0
        ):
            raise ValueError(f"{key} must be a finite number > 0, got {value!r}")


class LocalLinearWalk(Editor):
    """The paper's semantic age scheme without RL: each step is the minimum-norm step along the local age
    direction ĝ(z) for ``clip(target - age, ±max_years_per_step)`` years, norm-capped at ``max_step_norm``
    and keeping the ``keep`` quantities to first order (:meth:`LatentAgeEnv.age_step`, the policy's
    ``a[0]``): its env is the MDP's in ``local_linear`` mode with the walk's own cap and kept quantities."""

    name = "local_linear_walk"

    def __init__(self, *, max_years_per_step: float, max_step_norm: float, keep: tuple[str, ...] | list[str]):
        _positive(max_years_per_step=max_years_per_step, max_step_norm=max_step_norm)
        if any(k not in KEEPABLE for k in keep) or len(set(keep)) != len(keep):
            raise ValueError(f"keep must be distinct names from {list(KEEPABLE)}, got {list(keep)}")
        self.max_years_per_step, self.max_step_norm, self.keep = (
            max_years_per_step,
            max_step_norm,
            tuple(keep),
        )

    @classmethod
    def of_action(cls, action: ActionConfig) -> LocalLinearWalk:
        """The walk an MDP's ``local_linear`` action settings describe (the policy's ``a[0]`` alone)."""
        return cls(
            max_years_per_step=action.max_years_per_step, max_step_norm=action.max_step_norm, keep=action.keep
        )

    def env_action(self, action: ActionConfig) -> ActionConfig:
        return dataclasses.replace(
            action, mode="local_linear", max_step_norm=self.max_step_norm, keep=self.keep
        )

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        return env.age_step(_wanted_years(env, self.max_years_per_step))


class LeverWalk(Editor):
    """The walk with the policy's step levers (``action=levers``) held at one setting: each step asks for
    ``clip(scale · (target − age), ±scale · max_years_per_step)`` years by ``(1 − mix)`` x the smallest step
    in the metric ‖δ‖² + stiffness · ‖J_e δ‖² (identity drift priced from the first step) + ``mix`` x the
    same request solved in the semantic walk's basis, keeping ``keep`` to first order, norm-capped at
    ``scale · max_step_norm`` (:meth:`LatentAgeEnv.lever_step`). With stiffness 0, mix 0 and scale 1 it is
    the local-linear walk keeping the same quantities. ``experiments/step_gate.py`` runs it over a grid of
    settings."""

    name = "lever_walk"

    def __init__(
        self,
        *,
        stiffness: float,
        mix: float,
        scale: float,
        max_years_per_step: float,
        max_step_norm: float,
        keep: tuple[str, ...] | list[str],
    ):
        _positive(max_years_per_step=max_years_per_step, max_step_norm=max_step_norm, scale=scale)
        for key, value in (("stiffness", stiffness), ("mix", mix)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
        if stiffness < 0 or not 0 <= mix <= 1:
            raise ValueError(
                f"stiffness must be >= 0 and mix in [0, 1], got stiffness={stiffness}, mix={mix}"
            )
        self.walk = LocalLinearWalk(
            max_years_per_step=max_years_per_step, max_step_norm=max_step_norm, keep=keep
        )
        self.stiffness, self.mix, self.scale = float(stiffness), float(mix), float(scale)

    def env_action(self, action: ActionConfig) -> ActionConfig:
        levers = dataclasses.replace(
            self.walk.env_action(action), mode="levers", max_years_per_step=self.walk.max_years_per_step
        )
        if (
            self.stiffness > levers.max_stiffness
            or not 1 / levers.max_scale <= self.scale <= levers.max_scale
        ):
            raise ValueError(
                f"stiffness {self.stiffness} and scale {self.scale} must lie within the levers' range: stiffness "
                f"<= action.max_stiffness={levers.max_stiffness}, scale within 1/action.max_scale.."
                f"action.max_scale={levers.max_scale}"
            )
        return levers

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        return env.displacement(env.actions_of(self.stiffness, self.mix, self.scale))


class GlobalDirection(Editor):
    """InterFaceGAN-style: one linear age model ``age ≈ w·z + b`` fitted on ``num_samples`` latents from seeds
    ``first_seed ..`` (:func:`fit_global_direction`, on first use); every face walks along ``w``
    (minimum-norm step for the wanted years under that linear model, norm-capped)."""

    name = "global_direction"

    def __init__(self, *, num_samples: int, first_seed: int, max_years_per_step: float, max_step_norm: float):
        _positive(max_years_per_step=max_years_per_step, max_step_norm=max_step_norm)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
        self.num_samples, self.first_seed = num_samples, first_seed
        self.max_years_per_step, self.max_step_norm = max_years_per_step, max_step_norm
        self.direction: torch.Tensor | None = None

    def prepare(self, env: LatentAgeEnv) -> None:
        if self.direction is None:
            self.direction = fit_global_direction(env.world, self.num_samples, self.first_seed)["w"].float()

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        w = self.direction.to(env.device).expand(env.num_envs, -1)
        return min_norm_step(w, _wanted_years(env, self.max_years_per_step), self.max_step_norm)


class SemanticWalk(Editor):
    """The walk solved within a semantic basis: each step is the minimum-norm step for
    ``clip(target - age, ±max_years_per_step)`` years along the local age direction *projected onto* the span
    of ``num_directions`` closed-form semantic directions of the generator
    (:func:`~agelatent.world.directions.semantic_basis`: closed-form directions and, with ``age_direction``, the
    global ridge age direction); norm-capped at ``max_step_norm``. The face can only move along
    directions the generator itself treats as semantic, not along the age network's blind spots."""

    name = "semantic_walk"

    def __init__(
        self,
        *,
        num_directions: int,
        age_direction: bool,
        num_samples: int,
        first_seed: int,
        max_years_per_step: float,
        max_step_norm: float,
    ):
        _positive(max_years_per_step=max_years_per_step, max_step_norm=max_step_norm)
        if isinstance(num_directions, bool) or not isinstance(num_directions, int) or num_directions < 0:
            raise ValueError(f"num_directions must be an integer >= 0, got {num_directions!r}")
        if num_directions == 0 and not age_direction:
            raise ValueError("the basis is empty: give num_directions >= 1 or age_direction=true")
        self.num_directions, self.age_direction = num_directions, bool(age_direction)
        self.num_samples, self.first_seed = num_samples, first_seed
        self.max_years_per_step, self.max_step_norm = max_years_per_step, max_step_norm
        self.basis: torch.Tensor | None = None  # [k, d] orthonormal rows

    def env_action(self, action: ActionConfig) -> ActionConfig:
        return dataclasses.replace(action, mode="local_linear", max_step_norm=self.max_step_norm, keep=())

    def prepare(self, env: LatentAgeEnv) -> None:
        if self.basis is not None:
            return
        self.basis = semantic_basis(
            env.world, self.num_directions, self.age_direction, self.num_samples, self.first_seed
        )

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        basis = self.basis.to(env.device)
        within = (env.age_gradient @ basis.T) @ basis  # ĝ projected onto the basis
        return min_norm_step(within, _wanted_years(env, self.max_years_per_step), self.max_step_norm)


class GradientDescent(Editor):
    """White-box optimisation of the latent through the differentiable perception: each step descends
    ``((age - target) / age_scale)² + identity_weight * relu(soft_threshold - similarity)`` with a
    normalised gradient step of ``step_norm`` latent units (scaled down near the target)."""

    name = "gradient_descent"

    def __init__(self, *, step_norm: float, age_scale: float, identity_weight: float):
        _positive(step_norm=step_norm, age_scale=age_scale)
        self.step_norm, self.age_scale, self.identity_weight = step_norm, age_scale, identity_weight

    def prepare(self, env: LatentAgeEnv) -> None:
        if not env.world.perception.differentiable:
            raise ValueError("gradient_descent needs a differentiable perception (perception.runtime=torch)")

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        z = env.z.detach().requires_grad_(True)
        scores = env.score(z, with_grad=True)
        sim = env.world.identity_similarity(scores.identity, env.identity0)
        age_term = ((scores.ages_years - env.targets) / self.age_scale) ** 2
        id_term = (env.cfg.identity.soft_threshold - sim).clamp_min(0)
        (grad,) = torch.autograd.grad((age_term + self.identity_weight * id_term).sum(), z)
        # step length shrinks as the age error closes (a full step when >= age_scale years away)
        scale = ((env.targets - scores.ages_years.detach()).abs() / self.age_scale).clamp(max=1.0)
        unit = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return -(self.step_norm * scale)[:, None] * unit


class RandomWalk(Editor):
    """Isotropic random steps of a fixed norm: the floor any method must beat."""

    name = "random_walk"

    def __init__(self, *, step_norm: float, seed: int):
        _positive(step_norm=step_norm)
        self.step_norm = step_norm
        self._rng = torch.Generator().manual_seed(seed)

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        noise = torch.randn(env.num_envs, env.latent_dim, generator=self._rng).to(env.device)
        return self.step_norm * noise / noise.norm(dim=1, keepdim=True)
