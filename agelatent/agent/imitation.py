"""Demonstrations from an editor, and behaviour cloning of them: how an amortized policy starts.

An *amortized* policy acts from the forward pass alone (``action=full``: Δz = ``full_step_size`` · a, or
``action=semantic``: Δz in the semantic basis; the latent is in its observation), so at inference it needs no gradients and no probes -- it runs under any
perception, ``perception.runtime=onnxruntime`` included, at one world call per env step. Learning that map
from scratch in a 100-dimensional action space is slow, so it starts from a *teacher*: an editor that does
need gradients (by default the tuned local-linear walk), run in training only.

:func:`collect_demonstrations` runs the teacher on training start faces (the env's own seed stream) in
lockstep with a student env that has the policy's MDP: each step the teacher proposes Δz, the student env
takes the action whose displacement is nearest (:meth:`~agelatent.env.latent_age.LatentAgeEnv.actions_for`,
clipped to [-1, 1]; both envs then move to the same latent), and the student's observation, action, reward, next observation and termination are recorded.
:func:`behaviour_clone` fits the actor to those actions by maximum likelihood (its mean and its spread);
the transitions also go into SAC's replay buffer so the critic learns from them before the policy's own.
Settings: ``conf/demonstrations/`` (``none`` by default; ``walk`` in ``experiment=amortized``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from agelatent.agent.networks import SquashedGaussianActor, squashed_gaussian_log_prob
from agelatent.config import from_mapping, to_dict
from agelatent.env.latent_age import LatentAgeEnv
from agelatent.env.outcome import Outcome
from agelatent.env.rewards import Reward

__all__ = ["Demonstrations", "DemonstrationsConfig", "behaviour_clone", "collect_demonstrations"]

#: demonstration actions are clipped into (-1, 1) by this margin before tanh⁻¹ (the likelihood is finite)
_EDGE = 1e-3


@dataclass(frozen=True, kw_only=True)
class DemonstrationsConfig:
    """Values: ``conf/demonstrations/``. ``episodes = 0`` turns demonstrations off."""

    teacher: str | None  # an editor of editor_settings (e.g. local_linear_walk); null with episodes 0
    episodes: int  # teacher episodes on training start faces (the env's seed stream)
    batch_episodes: int  # episodes run side by side (one world call scores them all)
    epochs: int  # passes of behaviour cloning over the demonstrations
    batch_size: int
    lr: float
    holdout: float  # fraction of transitions kept out of cloning to measure how well it generalises
    replay: bool  # also put the demonstrations into SAC's replay buffer

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DemonstrationsConfig:
        return from_mapping(cls, to_dict(cfg["demonstrations"]), "demonstrations")

    def __post_init__(self) -> None:
        for name in ("episodes", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"demonstrations.{name} must be an integer >= 0, got {value!r}")
        for name in ("batch_episodes", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"demonstrations.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"demonstrations.holdout must be a fraction in [0, 1), got {self.holdout!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"demonstrations.lr must be a finite number > 0, got {self.lr!r}")
        if self.episodes and not self.teacher:
            raise ValueError(
                f"demonstrations.episodes={self.episodes} needs a teacher: set demonstrations.teacher to an "
                "editor of editor_settings (e.g. local_linear_walk), or demonstrations=none"
            )

    @property
    def enabled(self) -> bool:
        return self.episodes > 0


@dataclass(frozen=True)
class Demonstrations:
    """Teacher transitions in the student's MDP (``[N, ...]`` tensors, SAC's replay layout), and what they cost."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    episodes: int
    successes: int  # teacher episodes that ended in success
    clipped: float  # fraction of action components the [-1, 1] box clipped (the student could not follow)
    world_calls: int  # latents scored by the teacher's and the student's envs together

    def __len__(self) -> int:
        return len(self.obs)


def collect_demonstrations(
    world, cfg: Mapping[str, Any], teacher, settings: DemonstrationsConfig, seed: int
) -> Demonstrations:
    """Run ``teacher`` (an :class:`~agelatent.editors.Editor`) for ``settings.episodes`` episodes on training
    start faces drawn from ``seed``, recording transitions in the MDP that ``cfg`` defines (its action mode
    must be ``full`` or ``semantic``: the modes whose actions are a linear map of Δz)."""
    size = min(settings.batch_episodes, settings.episodes)
    student = LatentAgeEnv.from_config(world, cfg, auto_reset=False, num_envs=size)
    if student.local_linear:
        raise ValueError(
            "demonstrations need action=full or action=semantic (the policy writes the teacher's Δz as its "
            "action); with action=local_linear the policy already starts from the walk's step: use "
            "demonstrations=none"
        )
    mentor_cfg = dataclasses.replace(student.cfg, action=teacher.env_action(student.cfg.action))
    mentor = LatentAgeEnv(world, mentor_cfg, Reward.zero(), auto_reset=False)
    teacher.prepare(mentor)
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated")
    }
    successes, clipped, components, calls0 = 0, 0, 0, student.world_calls + mentor.world_calls
    for start in range(0, settings.episodes, size):
        n = min(size, settings.episodes - start)
        obs = student.reset(
            seed=seed if start == 0 else None
        )  # start faces and targets from ``seed``'s stream
        mentor.reset_to(student.z0, student.targets)
        student.active[n:] = False  # the last batch may be partial: its spare rows never move
        mentor.active[n:] = False
        for _ in range(student.cfg.max_steps):
            rows = student.active.nonzero().flatten()
            if len(rows) == 0:
                break
            wanted = student.actions_for(teacher.propose(mentor))
            actions = wanted.clamp(-1.0, 1.0)
            clipped += int((wanted[rows].abs() > 1.0).sum())
            components += wanted[rows].numel()
            result = student.step(actions)
            mentor.step_latent(student.displacement(actions))  # the same latent as the student's
            for key, value in (
                ("obs", obs),
                ("actions", actions),
                ("rewards", result.reward),
                ("next_obs", result.final_obs),
                ("terminated", result.terminated.float()),
            ):
                parts[key].append(value[rows].detach().cpu())
            obs = result.obs
        successes += int((student.outcome[:n] == Outcome.SUCCESS).sum())
    data = {k: torch.cat(v) for k, v in parts.items()}
    return Demonstrations(
        **data,
        episodes=settings.episodes,
        successes=successes,
        clipped=clipped / max(components, 1),
        world_calls=student.world_calls + mentor.world_calls - calls0,
    )


def behaviour_clone(
    actor: SquashedGaussianActor, demos: Demonstrations, settings: DemonstrationsConfig, seed: int
) -> dict[str, float]:
    """Fit ``actor`` to the demonstrations' actions by maximum likelihood under its squashed Gaussian (mean
    and spread), ``settings.epochs`` passes in shuffled minibatches over all but a random ``settings.holdout``
    of the transitions. Returns the first and last epoch's mean negative log-likelihood, the mean squared
    error of the deterministic action on the cloned and on the held-out transitions, and the actions'
    variance: a held-out error near the variance means the teacher's actions cannot be predicted from what
    the policy observes."""
    device = next(actor.parameters()).device
    obs = demos.obs.to(device)
    actions = demos.actions.to(device).clamp(-1.0 + _EDGE, 1.0 - _EDGE)
    pre_tanh = torch.atanh(actions)
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(obs), generator=generator).to(device)
    held = shuffled[: int(settings.holdout * len(obs))]
    fit = shuffled[len(held) :]
    optimizer = torch.optim.Adam(actor.parameters(), lr=settings.lr)
    history = []
    for _ in range(settings.epochs):
        order = fit[torch.randperm(len(fit), generator=generator).to(device)]
        total = 0.0
        for batch in order.split(settings.batch_size):
            mean, log_std = actor(obs[batch])
            loss = -squashed_gaussian_log_prob(pre_tanh[batch], mean, log_std).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        history.append(total / len(fit))

    def mse(rows: torch.Tensor) -> float:
        if len(rows) == 0:
            return float("nan")
        with torch.no_grad():
            return float((actor.deterministic(obs[rows]) - actions[rows]).pow(2).mean())

    return {
        "nll_first": history[0] if history else float("nan"),
        "nll_last": history[-1] if history else float("nan"),
        "mse": mse(fit),
        "heldout_mse": mse(held),
        "action_variance": float(actions.var(0).mean()),
    }
