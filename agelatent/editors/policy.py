"""The trained SAC policy as an editor (deterministic: the squashed mean action)."""

from __future__ import annotations

from pathlib import Path

import torch

from agelatent.agent.networks import SquashedGaussianActor
from agelatent.editors.base import Editor
from agelatent.env.latent_age import ActionConfig, LatentAgeEnv
from agelatent.runs import RunDir
from agelatent.store import load_weights_only

__all__ = ["PolicyEditor"]


class PolicyEditor(Editor):
    """Acts with a trained actor on the env's observation; the env maps actions to Δz exactly as in training.

    ``policy``: a training run directory (``runs/<name>``) or a checkpoint in one (checked here, loaded by
    :meth:`prepare`). The env must be built with the training run's MDP (``agelatent-eval`` takes it from the
    run's saved config), so the action settings are the MDP's as they are.
    """

    name = "sac_policy"

    def __init__(self, *, policy: str | Path | None) -> None:
        if not policy:
            raise ValueError(
                "editors includes sac_policy but policy is null: set policy=runs/<name> (a training run)"
            )
        _, self.checkpoint = RunDir.of_policy(policy)
        self.actor: SquashedGaussianActor | None = None

    def env_action(self, action: ActionConfig) -> ActionConfig:
        return action

    def prepare(self, env: LatentAgeEnv) -> None:
        if self.actor is None:
            self.actor = load_actor(self.checkpoint, env)

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        with torch.no_grad():
            actions = self.actor.deterministic(env.observation())
        return env.displacement(actions)


def load_actor(path: str | Path, env: LatentAgeEnv) -> SquashedGaussianActor:
    """The actor of an ``agelatent-train`` checkpoint, sized for ``env`` and frozen, on its device."""
    path = Path(path)
    ckpt = load_weights_only(
        path, "policy checkpoint", "pass a checkpoint written by agelatent-train (runs/<name>)"
    )
    cfg = ckpt["hyper_parameters"]["cfg"]
    actor = SquashedGaussianActor(
        env.observation_dim, env.action_dim, cfg["hidden_sizes"], cfg["log_std_min"], cfg["log_std_max"]
    )
    state = {k.removeprefix("actor."): v for k, v in ckpt["state_dict"].items() if k.startswith("actor.")}
    try:
        actor.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: the actor does not fit this env (observation_dim={env.observation_dim}, "
            f"action_dim={env.action_dim}); evaluate with the training run's env config ({err})"
        ) from err
    return actor.to(env.device).eval().requires_grad_(False)
